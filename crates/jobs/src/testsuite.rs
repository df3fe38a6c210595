//! The [`JobStore`] contract as executable tests, written once for every backend.
//!
//! Each function takes a fresh, empty store and panics on a violation. A backend runs the whole
//! suite with [`job_store_suite!`](crate::job_store_suite), giving it an async factory that
//! returns `(guard, Arc<dyn JobStore>)`; the guard (e.g. a temp dir) lives as long as the test.
//! The concurrency tests take an `Arc` because they spawn tasks; everything else takes
//! `&dyn JobStore`.
//!
//! [`test_database_url`] hands out a fresh Postgres database per test (see its module for where
//! the server comes from), for this suite and for other crates' tests that need a real one.
//!
//! Leases and retry delays are short real durations instead of an injected clock, so the suite
//! also exercises the database's own notion of "expired".

pub use crate::testpg::PrivateCluster;
use crate::{
    now_millis, AwayTask, CancelOutcome, CreateOutcome, FailOutcome, JobStore, Lease, Millis,
    NewJob, RenewOutcome, StoreError, StoredOutput,
};
use reelay_protocol::{ErrorDetail, JobStatus};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::testpg::test_database_url;

/// Long enough never to expire during a test.
const LONG_LEASE: Duration = Duration::from_secs(60);
/// Short enough to wait out.
const SHORT_LEASE: Duration = Duration::from_millis(100);
/// Comfortably past [`SHORT_LEASE`], so a slow machine does not turn expiry tests flaky.
const PAST_SHORT_LEASE: Duration = Duration::from_millis(180);

/// A job id in the real `{cluster}.{26 chars}` shape that sorts by creation order, also within
/// one millisecond (unlike a ULID from a non-monotonic generator).
pub fn next_job_id(cluster: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{cluster}.{:013}{:013}",
        now_millis(),
        n % 10_000_000_000_000
    )
}

/// A valid job with no idempotency key, priority 0 and 3 attempts.
pub fn new_job(cluster: &str) -> NewJob {
    NewJob {
        id: next_job_id(cluster),
        cluster: cluster.to_string(),
        spec_json: r#"{"input":{"key":"uploads/in.mp4"},"outputs":[{"preset":"mp4-720p"}]}"#
            .to_string(),
        spec_hash: "hash-a".to_string(),
        input_key: Some("uploads/in.mp4".to_string()),
        input_url: None,
        priority: 0,
        idempotency_key: None,
        max_attempts: 3,
        estimated_seconds: 10.0,
        owner: Some("tester".to_string()),
        tasks: vec![crate::NewTask::transcode(10.0)],
        split_json: None,
        metadata: Default::default(),
        input_name: None,
        input_facts: None,
    }
}

fn output(name: &str) -> StoredOutput {
    StoredOutput {
        name: name.to_string(),
        key: format!("outputs/{name}"),
        size: 1234,
        content_type: "video/mp4".to_string(),
        ..Default::default()
    }
}

async fn create(store: &dyn JobStore, new: NewJob) -> crate::Job {
    match store.create_job(new).await.expect("create_job") {
        CreateOutcome::Created(job) => job,
        CreateOutcome::Existing(job) => panic!("expected Created, got Existing({})", job.id),
    }
}

async fn get(store: &dyn JobStore, id: &str) -> crate::Job {
    store
        .get_job(id)
        .await
        .expect("get_job")
        .unwrap_or_else(|| panic!("job {id} missing"))
}

async fn sleep_until(millis: i64) {
    let wait = millis.saturating_sub(now_millis()).max(0) + 20;
    tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
}

/// Creates, reads back field by field, and lists with a status filter and cursor pagination.
pub async fn create_get_list(store: &dyn JobStore) {
    let before = now_millis();
    let mut first = new_job("test");
    first.input_key = None;
    first.input_url = Some("https://example.com/in.mp4".to_string());
    first.priority = 7;
    first.owner = None;
    first.estimated_seconds = 12.5;
    let job = create(store, first.clone()).await;
    assert_eq!(job.id, first.id);
    assert_eq!(job.cluster, "test");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.progress, 0.0);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.priority, 7);
    assert_eq!(job.spec_json, first.spec_json);
    assert_eq!(job.spec_hash, first.spec_hash);
    assert_eq!(job.input_key, None);
    assert_eq!(job.input_url, first.input_url);
    assert_eq!(job.idempotency_key, None);
    assert_eq!(job.owner, None);
    assert_eq!(job.estimated_seconds, 12.5);
    assert!(job.created_at >= before && job.created_at <= now_millis());
    assert_eq!(job.started_at, None);
    assert_eq!(job.finished_at, None);
    assert_eq!(job.error, None);
    assert!(job.outputs.is_empty());
    assert!(!job.cancel_requested);
    assert_eq!(get(store, &first.id).await, job);
    assert_eq!(
        store.get_job("test.NOSUCHJOB").await.expect("get_job"),
        None
    );

    let mut ids = vec![job.id.clone()];
    for _ in 0..4 {
        ids.push(create(store, new_job("test")).await.id);
    }
    // Newest first.
    ids.reverse();
    let cancelled = [ids[1].clone(), ids[3].clone()];
    for id in &cancelled {
        assert!(matches!(
            store.cancel(id).await.expect("cancel"),
            CancelOutcome::Cancelled(_)
        ));
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let (page, next) = store
            .list_jobs(None, 2, cursor.as_deref())
            .await
            .expect("list_jobs");
        assert!(page.len() <= 2);
        pages += 1;
        seen.extend(page.into_iter().map(|j| j.id));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let (page, next) = store.list_jobs(None, 5, None).await.expect("list_jobs");
    assert_eq!(page.len(), 5);
    assert_eq!(next, None, "an exactly full last page has no next cursor");

    let (page, next) = store
        .list_jobs(Some(JobStatus::Cancelled), 10, None)
        .await
        .expect("list_jobs");
    assert_eq!(next, None);
    assert_eq!(
        page.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        cancelled.to_vec()
    );
    let (page, next) = store
        .list_jobs(Some(JobStatus::Queued), 2, None)
        .await
        .expect("list_jobs");
    assert_eq!(
        page.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [ids[0].as_str(), ids[2].as_str()]
    );
    let (page, next) = store
        .list_jobs(Some(JobStatus::Queued), 2, next.as_deref())
        .await
        .expect("list_jobs");
    assert_eq!(
        page.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [ids[4].as_str()]
    );
    assert_eq!(next, None);
    let (page, _) = store
        .list_jobs(Some(JobStatus::Succeeded), 10, None)
        .await
        .expect("list_jobs");
    assert!(page.is_empty());
}

/// A reused key returns the original job for the same spec and refuses a different spec.
pub async fn idempotency(store: &dyn JobStore) {
    let mut new = new_job("test");
    new.idempotency_key = Some("key-1".to_string());
    let original = create(store, new.clone()).await;
    assert_eq!(original.idempotency_key.as_deref(), Some("key-1"));

    let mut retry = new.clone();
    retry.id = next_job_id("test");
    match store.create_job(retry.clone()).await.expect("create_job") {
        CreateOutcome::Existing(job) => assert_eq!(job, original),
        CreateOutcome::Created(job) => panic!("duplicate job {} for a reused key", job.id),
    }
    assert_eq!(store.get_job(&retry.id).await.expect("get_job"), None);

    let mut other = retry.clone();
    other.id = next_job_id("test");
    other.spec_hash = "hash-b".to_string();
    assert!(matches!(
        store.create_job(other).await,
        Err(StoreError::IdempotencyConflict)
    ));

    // Keys are scoped per cluster.
    let mut elsewhere = new.clone();
    elsewhere.id = next_job_id("other");
    elsewhere.cluster = "other".to_string();
    create(store, elsewhere).await;

    // Jobs without a key never collide.
    create(store, new_job("test")).await;
    create(store, new_job("test")).await;
    let (all, _) = store.list_jobs(None, 100, None).await.expect("list_jobs");
    assert_eq!(all.len(), 4);
}

/// Idempotency keys belong to their owner: another owner's use of the same key creates that
/// owner's own job (and says nothing about the first), while each owner still gets its replay
/// and its conflict. Jobs without an owner (open mode) share one key space.
pub async fn idempotency_per_owner(store: &dyn JobStore) {
    let with = |owner: Option<&str>, hash: &str| {
        let mut new = new_job("test");
        new.idempotency_key = Some("shared-key".to_string());
        new.owner = owner.map(str::to_string);
        new.spec_hash = hash.to_string();
        new
    };
    let alice = create(store, with(Some("alice"), "hash-a")).await;
    // Bob's key is Bob's, even with another spec: a new job, not Alice's, not a conflict.
    let bob = create(store, with(Some("bob"), "hash-b")).await;
    assert_ne!(bob.id, alice.id);
    assert_eq!(bob.owner.as_deref(), Some("bob"));
    match store
        .create_job(with(Some("bob"), "hash-b"))
        .await
        .expect("create_job")
    {
        CreateOutcome::Existing(job) => assert_eq!(job, bob),
        CreateOutcome::Created(job) => panic!("Bob's replay created {}", job.id),
    }
    match store
        .create_job(with(Some("alice"), "hash-a"))
        .await
        .expect("create_job")
    {
        CreateOutcome::Existing(job) => assert_eq!(job, alice),
        CreateOutcome::Created(job) => panic!("Alice's replay created {}", job.id),
    }
    assert!(matches!(
        store.create_job(with(Some("alice"), "hash-b")).await,
        Err(StoreError::IdempotencyConflict)
    ));
    let open = create(store, with(None, "hash-a")).await;
    match store
        .create_job(with(None, "hash-a"))
        .await
        .expect("create_job")
    {
        CreateOutcome::Existing(job) => assert_eq!(job, open),
        CreateOutcome::Created(job) => panic!("an ownerless replay created {}", job.id),
    }
    assert!(matches!(
        store.create_job(with(None, "hash-c")).await,
        Err(StoreError::IdempotencyConflict)
    ));
    let (all, _) = store.list_jobs(None, 100, None).await.expect("list_jobs");
    assert_eq!(all.len(), 3);
}

/// Among jobs of equal priority, owners take turns: one owner's burst does not run entirely
/// before a job another owner submitted after it. Priority still comes first, and one owner's
/// own jobs keep their order.
pub async fn fair_claims_across_owners(store: &dyn JobStore) {
    let submit = |owner: &str, priority: i32| {
        let mut new = new_job("test");
        new.owner = Some(owner.to_string());
        new.priority = priority;
        new
    };
    let mut ids = std::collections::HashMap::new();
    for (name, owner) in [
        ("a1", "alice"),
        ("a2", "alice"),
        ("a3", "alice"),
        ("a4", "alice"),
        ("b1", "bob"),
        ("b2", "bob"),
        ("c1", "carol"),
    ] {
        ids.insert(create(store, submit(owner, 0)).await.id, name);
    }
    // Submitted last, but more urgent.
    ids.insert(create(store, submit("alice", 5)).await.id, "a-urgent");
    let mut order = Vec::new();
    while let Some(claim) = store.claim("w", LONG_LEASE).await.expect("claim") {
        order.push(ids[&claim.job.id]);
    }
    assert_eq!(
        order,
        ["a-urgent", "a1", "b1", "c1", "a2", "b2", "a3", "a4"],
        "round robin across owners within a priority"
    );

    // A newcomer while one owner's backlog is being worked through is served within a round,
    // not after the backlog.
    for _ in 0..6 {
        create(store, submit("alice", 0)).await;
    }
    let first = store
        .claim("w", LONG_LEASE)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(first.job.owner.as_deref(), Some("alice"));
    let dave = create(store, submit("dave", 0)).await;
    let next: Vec<String> = [
        store
            .claim("w", LONG_LEASE)
            .await
            .expect("claim")
            .expect("job"),
        store
            .claim("w", LONG_LEASE)
            .await
            .expect("claim")
            .expect("job"),
    ]
    .into_iter()
    .map(|c| c.job.id)
    .collect();
    assert!(
        next.contains(&dave.id),
        "dave waited behind alice's backlog"
    );
}

/// Rows as a schema-4 database (before per-owner keys and fair turns) holds them: a queued job
/// of `alice` with idempotency key `k`, and one of `bob` with the same key in cluster `other`
/// (schema 4 allowed a key once per cluster). Plain SQL both backends accept, for the upgrade
/// tests.
pub const SCHEMA_4_ROWS: &[&str] = &[
    "INSERT INTO jobs (id, cluster, status, max_attempts, spec_json, spec_hash, idempotency_key, \
     owner, created_at) VALUES ('test.0001', 'test', 'queued', 3, '{}', 'h1', 'k', 'alice', 1)",
    "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after, max_attempts) \
     VALUES ('test.0001.transcode', 'test.0001', 'transcode', 'queued', 0, 1, 1, 3)",
    "INSERT INTO jobs (id, cluster, status, max_attempts, spec_json, spec_hash, idempotency_key, \
     owner, created_at) VALUES ('other.0002', 'other', 'queued', 3, '{}', 'h2', 'k', 'bob', 2)",
    "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after, max_attempts) \
     VALUES ('other.0002.transcode', 'other.0002', 'transcode', 'queued', 0, 2, 2, 3)",
];

/// After upgrading a database holding [`SCHEMA_4_ROWS`]: the old jobs are still claimed first
/// (oldest first), their keys still replay for their owner, and another owner may now use them.
pub async fn upgraded_from_schema_4(store: &dyn JobStore) {
    let mut replay = new_job("test");
    replay.owner = Some("alice".into());
    replay.idempotency_key = Some("k".into());
    replay.spec_hash = "h1".into();
    match store.create_job(replay.clone()).await.expect("create_job") {
        CreateOutcome::Existing(job) => assert_eq!(job.id, "test.0001"),
        CreateOutcome::Created(job) => panic!("replay created {}", job.id),
    }
    let mut carol = replay.clone();
    carol.id = next_job_id("test");
    carol.owner = Some("carol".into());
    carol.spec_hash = "other".into();
    let carol = create(store, carol).await;
    let mut claimed = Vec::new();
    while let Some(c) = store.claim("w", LONG_LEASE).await.expect("claim") {
        claimed.push(c.job.id);
    }
    assert_eq!(
        claimed,
        vec!["test.0001".to_string(), "other.0002".into(), carol.id]
    );
}

/// A database at schema 7 (before tasks had kinds, payloads and dependencies) holding a queued
/// job, a running one and a finished one, written the old way. `cancel_requested` is spelled as
/// a literal both dialects read.
pub const SCHEMA_7_ROWS: &[&str] = &[
    "INSERT INTO jobs (id, cluster, status, max_attempts, spec_json, spec_hash, owner, \
     estimated_seconds, created_at) \
     VALUES ('old.0001', 'old', 'queued', 3, '{}', 'h1', 'alice', 42.0, 1)",
    "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after, max_attempts, \
     owner, fair_seq) \
     VALUES ('old.0001.transcode', 'old.0001', 'transcode', 'queued', 0, 1, 1, 3, 'alice', 1)",
    "INSERT INTO jobs (id, cluster, status, progress, attempts, max_attempts, spec_json, \
     spec_hash, owner, estimated_seconds, created_at, started_at) \
     VALUES ('old.0002', 'old', 'running', 0.5, 1, 3, '{}', 'h2', 'bob', 10.0, 2, 3)",
    "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after, attempts, \
     max_attempts, lease_owner, lease_expires_at, claimed_at, owner, fair_seq) \
     VALUES ('old.0002.transcode', 'old.0002', 'transcode', 'running', 0, 2, 2, 1, 3, \
     'old-worker', 9000000000000, 3, 'bob', 2)",
    "INSERT INTO jobs (id, cluster, status, progress, attempts, max_attempts, spec_json, \
     spec_hash, owner, estimated_seconds, created_at, started_at, finished_at, outputs) \
     VALUES ('old.0003', 'old', 'succeeded', 1, 1, 3, '{}', 'h3', 'bob', 10.0, 3, 4, 5, \
     '[{\"name\":\"a.mp4\",\"key\":\"outputs/old.0003/a1/a.mp4\",\"size\":7,\"content_type\":\"video/mp4\"}]')",
    "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after, attempts, \
     max_attempts, owner, fair_seq) \
     VALUES ('old.0003.transcode', 'old.0003', 'transcode', 'succeeded', 0, 3, 3, 1, 3, 'bob', 3)",
];

/// After upgrading a database holding [`SCHEMA_7_ROWS`]: the old queued job is claimed as a
/// `transcode` task and finishes; the running one's worker carries on under its lease and
/// finishes too; the finished one is unchanged; each has one event with its status.
pub async fn upgraded_from_schema_7(store: &dyn JobStore) {
    use crate::TaskStatus;
    let queued = get(store, "old.0001").await;
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.tasks.len(), 1);
    assert_eq!(queued.tasks[0].kind, "transcode");
    assert_eq!(queued.tasks[0].status, TaskStatus::Queued);
    let finished = get(store, "old.0003").await;
    assert_eq!(finished.status, JobStatus::Succeeded);
    assert_eq!(finished.outputs.len(), 1);

    let claim = store
        .claim("w", LONG_LEASE)
        .await
        .expect("claim")
        .expect("old job");
    assert_eq!(claim.job.id, "old.0001");
    assert_eq!(claim.task_id, "old.0001.transcode");
    assert_eq!(claim.kind, "transcode");
    assert_eq!(claim.payload, serde_json::json!({}));
    assert!(claim.dependencies.is_empty());
    assert_eq!(claim.attempt, 1);
    assert!(Lease::new(&claim.task_id, "w", 1)
        .complete(store, vec![output("new.mp4")])
        .await
        .expect("complete"));
    let done = get(store, "old.0001").await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.outputs, vec![output("new.mp4")]);

    // The worker that held the running job before the upgrade still holds it.
    assert_eq!(
        Lease::new("old.0002.transcode", "old-worker", 1)
            .renew(store, LONG_LEASE, Some(0.75), None)
            .await
            .expect("renew"),
        RenewOutcome::Renewed
    );
    assert_eq!(get(store, "old.0002").await.progress, 0.75);
    assert!(Lease::new("old.0002.transcode", "old-worker", 1)
        .complete(store, vec![output("b.mp4")])
        .await
        .expect("complete"));
    assert_eq!(get(store, "old.0002").await.status, JobStatus::Succeeded);
    assert_eq!(get(store, "old.0003").await, finished);

    let events = store.job_events("old.0003", 0, 10).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "succeeded");
    let events = store.job_events("old.0001", 0, 10).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "running", "succeeded"]);
    assert!(store.claim("w", LONG_LEASE).await.expect("claim").is_none());
}

/// Eight concurrent creates with one key: exactly one is Created, all agree on its id.
pub async fn concurrent_idempotent_creates(store: Arc<dyn JobStore>) {
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut new = new_job("test");
            new.idempotency_key = Some("same-key".to_string());
            store.create_job(new).await.expect("create_job")
        }));
    }
    let mut created = 0;
    let mut ids = HashSet::new();
    for handle in handles {
        let outcome = handle.await.expect("task panicked");
        if matches!(outcome, CreateOutcome::Created(_)) {
            created += 1;
        }
        ids.insert(outcome.into_job().id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let (all, _) = store.list_jobs(None, 100, None).await.expect("list_jobs");
    assert_eq!(all.len(), 1);
}

/// Highest priority first, then oldest; a successful claim updates job and lease.
pub async fn claim_order(store: &dyn JobStore) {
    let mut ids = Vec::new();
    for priority in [0, 5, 0, 5, -1] {
        let mut new = new_job("test");
        new.priority = priority;
        ids.push(create(store, new).await.id);
    }
    let expected = [&ids[1], &ids[3], &ids[0], &ids[2], &ids[4]];
    for want in expected {
        let before = now_millis();
        let claim = store
            .claim("worker-1", LONG_LEASE)
            .await
            .expect("claim")
            .expect("a claimable job");
        assert_eq!(&claim.job.id, want);
        assert_eq!(claim.attempt, 1);
        assert_eq!(claim.job.attempts, 1);
        assert_eq!(claim.job.status, JobStatus::Running);
        let started = claim.job.started_at.expect("started_at set");
        assert!(started >= before);
        assert!(claim.lease_expires_at >= before + LONG_LEASE.as_millis() as i64);
        assert!(!claim.task_id.is_empty());
        assert_eq!(get(store, want).await, claim.job);
    }
    assert!(store
        .claim("worker-1", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
}

/// Nothing to do: an empty store, and one holding only finished or live-leased work.
pub async fn claim_empty(store: &dyn JobStore) {
    assert!(store.claim("w", LONG_LEASE).await.expect("claim").is_none());
    let cancelled = create(store, new_job("test")).await;
    store.cancel(&cancelled.id).await.expect("cancel");
    create(store, new_job("test")).await;
    let claim = store.claim("w", LONG_LEASE).await.expect("claim");
    assert!(claim.is_some());
    assert!(store
        .claim("w2", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
}

/// Eight workers race over twenty jobs: every job is handed out exactly once.
pub async fn concurrent_claims(store: Arc<dyn JobStore>) {
    let mut ids = HashSet::new();
    for _ in 0..20 {
        ids.insert(create(&*store, new_job("test")).await.id);
    }
    let mut handles = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            while let Some(claim) = store.claim(&worker, LONG_LEASE).await.expect("claim") {
                assert_eq!(claim.attempt, 1);
                mine.push(claim.job.id);
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for handle in handles {
        claimed.extend(handle.await.expect("task panicked"));
    }
    let unique: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 20, "some job was claimed twice: {claimed:?}");
    assert_eq!(unique, ids);
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.running), (0, 20));
}

/// Workers completing, failing or renewing while users cancel the same jobs: every job ends
/// either completed (the cancel came too late) or cancelled (the completion came too late),
/// never both and never half of each.
pub async fn concurrent_cancel_and_complete(store: Arc<dyn JobStore>) {
    const JOBS: usize = 16;
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(create(&*store, new_job("test")).await.id);
    }
    let mut claims = Vec::new();
    while let Some(claim) = store.claim("w", LONG_LEASE).await.expect("claim") {
        claims.push(claim);
    }
    assert_eq!(claims.len(), JOBS);

    let mut handles = Vec::new();
    for (i, claim) in claims.into_iter().enumerate() {
        let worker = {
            let store = store.clone();
            tokio::spawn(async move {
                let lease = claim.lease("w");
                let renewed = lease
                    .renew(&*store, LONG_LEASE, Some(0.5), None)
                    .await
                    .expect("renew");
                assert_ne!(renewed, RenewOutcome::LeaseLost);
                let finished = if i % 2 == 0 {
                    lease
                        .complete(&*store, vec![output("o.mp4")])
                        .await
                        .expect("complete")
                } else {
                    let error = ErrorDetail::new("invalid_input", "not a video");
                    match lease.fail(&*store, error, None).await.expect("fail") {
                        FailOutcome::Failed => true,
                        FailOutcome::LeaseLost => false,
                        other => panic!("fail without retry gave {other:?}"),
                    }
                };
                (claim.job.id, finished)
            })
        };
        let canceller = {
            let store = store.clone();
            let id = ids[i].clone();
            tokio::spawn(async move { store.cancel(&id).await.expect("cancel") })
        };
        handles.push((worker, canceller));
    }
    for (worker, canceller) in handles {
        let (id, finished) = worker.await.expect("worker panicked");
        let cancel = canceller.await.expect("canceller panicked");
        let job = get(&*store, &id).await;
        match cancel {
            CancelOutcome::Cancelled(cancelled) => {
                assert!(!finished, "{id}: cancelled and finished by the worker");
                assert_eq!(job.status, JobStatus::Cancelled);
                assert!(job.cancel_requested);
                assert_eq!(job, cancelled);
            }
            CancelOutcome::AlreadyFinished(_) => {
                assert!(
                    finished,
                    "{id}: cancel refused but the worker did not finish"
                );
                assert!(matches!(
                    job.status,
                    JobStatus::Succeeded | JobStatus::Failed
                ));
                assert!(!job.cancel_requested);
            }
            CancelOutcome::NotFound => panic!("{id}: not found"),
        }
    }
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.running), (0, 0));
}

/// A dead worker's expired lease is taken over; the old worker can no longer touch the task.
pub async fn lease_expiry_takeover(store: &dyn JobStore) {
    let job = create(store, new_job("test")).await;
    let first = store
        .claim("worker-old", SHORT_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    // The first worker's lease; after it expires, another worker's takes over (attempt 2).
    let old = Lease::new(&first.task_id, "worker-old", 1);
    assert_eq!(
        old.renew(store, SHORT_LEASE, Some(0.25), None)
            .await
            .expect("renew"),
        RenewOutcome::Renewed
    );
    assert_eq!(get(store, &job.id).await.progress, 0.25);
    // Someone else's identity or a wrong attempt number is not the owner.
    assert_eq!(
        Lease::new(&first.task_id, "worker-x", 1)
            .renew(store, SHORT_LEASE, None, None)
            .await
            .expect("renew"),
        RenewOutcome::LeaseLost
    );
    assert_eq!(
        Lease::new(&first.task_id, "worker-old", 2)
            .renew(store, SHORT_LEASE, None, None)
            .await
            .expect("renew"),
        RenewOutcome::LeaseLost
    );

    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let second = store
        .claim("worker-new", LONG_LEASE)
        .await
        .expect("claim")
        .expect("expired lease is claimable");
    assert_eq!(second.job.id, job.id);
    assert_eq!(second.task_id, first.task_id);
    assert_eq!(second.attempt, 2);
    assert_eq!(second.job.attempts, 2);
    assert_eq!(second.job.status, JobStatus::Running);
    assert_eq!(second.job.started_at, first.job.started_at);
    assert!(store
        .claim("worker-3", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());

    let new = Lease::new(&first.task_id, "worker-new", 2);
    assert_eq!(
        old.renew(store, SHORT_LEASE, Some(0.9), None)
            .await
            .expect("renew"),
        RenewOutcome::LeaseLost
    );
    assert!(!old
        .complete(store, vec![output("stale.mp4")])
        .await
        .expect("complete"));
    assert_eq!(
        old.fail(store, ErrorDetail::new("x", "y"), None)
            .await
            .expect("fail"),
        FailOutcome::LeaseLost
    );
    old.release(store).await.expect("release");
    let unchanged = get(store, &job.id).await;
    assert_eq!(unchanged.status, JobStatus::Running);
    assert_eq!(unchanged.attempts, 2);
    assert_ne!(unchanged.progress, 0.9);

    assert!(new
        .complete(store, vec![output("out.mp4")])
        .await
        .expect("complete"));
    let done = get(store, &job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.progress, 1.0);
    assert_eq!(done.outputs, vec![output("out.mp4")]);
    assert!(done.finished_at.is_some());
    // Exactly one completion.
    assert!(!new
        .complete(store, vec![output("again.mp4")])
        .await
        .expect("complete"));
    assert_eq!(
        new.renew(store, LONG_LEASE, None, None)
            .await
            .expect("renew"),
        RenewOutcome::LeaseLost
    );
    assert_eq!(get(store, &job.id).await, done);
}

/// Leases that keep expiring use up the attempts; the job then fails as `worker_lost` and the
/// same claim call moves on to other work.
pub async fn lease_expiry_exhausts_attempts(store: &dyn JobStore) {
    let mut doomed = new_job("test");
    doomed.priority = 10;
    doomed.max_attempts = 2;
    let doomed = create(store, doomed).await;
    let other = create(store, new_job("test")).await;

    let mut last = None;
    for (worker, attempt) in [("w1", 1), ("w2", 2)] {
        let claim = store
            .claim(worker, SHORT_LEASE)
            .await
            .expect("claim")
            .expect("claimable");
        assert_eq!(claim.job.id, doomed.id);
        assert_eq!(claim.attempt, attempt);
        tokio::time::sleep(PAST_SHORT_LEASE).await;
        last = Some(claim);
    }
    let last = last.expect("two claims");
    let claim = store
        .claim("w3", LONG_LEASE)
        .await
        .expect("claim")
        .expect("the other job");
    assert_eq!(claim.job.id, other.id);

    let failed = get(store, &doomed.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(
        failed.error.as_ref().map(|e| e.code.as_str()),
        Some("worker_lost")
    );
    assert!(failed.finished_at.is_some());
    assert!(store
        .claim("w4", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
    // The last worker waking up late changes nothing.
    let last_lease = Lease::new(&last.task_id, "w2", 2);
    assert_eq!(
        last_lease
            .renew(store, LONG_LEASE, Some(0.9), None)
            .await
            .expect("renew"),
        RenewOutcome::LeaseLost
    );
    assert!(!last_lease
        .complete(store, vec![output("late.mp4")])
        .await
        .expect("complete"));
    assert_eq!(get(store, &doomed.id).await, failed);
}

/// A retryable failure requeues with a delay, until the attempts run out.
pub async fn fail_with_retry(store: &dyn JobStore) {
    let mut new = new_job("test");
    new.max_attempts = 2;
    let job = create(store, new).await;

    let first = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    let first_lease = Lease::new(&first.task_id, "w1", 1);
    first_lease
        .renew(store, LONG_LEASE, Some(0.5), None)
        .await
        .expect("renew");
    let before = now_millis();
    let err = ErrorDetail::new("fetch_failed", "input server answered 503");
    let outcome = first_lease
        .fail(store, err.clone(), Some(Duration::from_millis(500)))
        .await
        .expect("fail");
    let FailOutcome::Requeued { run_after } = outcome else {
        panic!("expected Requeued, got {outcome:?}");
    };
    assert!(run_after >= before + 500);
    let queued = get(store, &job.id).await;
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.attempts, 1);
    assert_eq!(queued.error.as_ref(), Some(&err));
    assert_eq!(queued.finished_at, None);
    assert_eq!(queued.progress, 0.0);
    assert_eq!(
        store.counts().await.expect("counts").queued,
        1,
        "a job waiting for its retry is still queued"
    );

    assert!(
        store
            .claim("w2", LONG_LEASE)
            .await
            .expect("claim")
            .is_none(),
        "claimable before run_after"
    );
    sleep_until(run_after).await;
    let second = store
        .claim("w2", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable after run_after");
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.job.error.as_ref(),
        Some(&err),
        "last error kept while retrying"
    );

    let final_err = ErrorDetail::new("fetch_failed", "still 503");
    assert_eq!(
        Lease::new(&second.task_id, "w2", 2)
            .fail(store, final_err.clone(), Some(Duration::from_millis(1)))
            .await
            .expect("fail"),
        FailOutcome::Failed
    );
    let failed = get(store, &job.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error, Some(final_err));
    assert!(failed.finished_at.is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store
        .claim("w3", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
}

/// A failure without a retry delay is final, whatever attempts are left.
pub async fn fail_without_retry(store: &dyn JobStore) {
    let job = create(store, new_job("test")).await;
    let claim = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    let err = ErrorDetail::new("invalid_input", "not a video");
    let lease = Lease::new(&claim.task_id, "w1", 1);
    assert_eq!(
        lease.fail(store, err.clone(), None).await.expect("fail"),
        FailOutcome::Failed
    );
    let failed = get(store, &job.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.error, Some(err));
    assert!(failed.finished_at.is_some());
    assert!(store
        .claim("w2", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
    assert_eq!(
        lease
            .fail(store, ErrorDetail::new("x", "y"), None)
            .await
            .expect("fail"),
        FailOutcome::LeaseLost,
        "a second failure report changes nothing"
    );
}

/// Cancelling queued, running, finished and unknown jobs.
pub async fn cancel(store: &dyn JobStore) {
    let queued = create(store, new_job("test")).await;
    let CancelOutcome::Cancelled(job) = store.cancel(&queued.id).await.expect("cancel") else {
        panic!("queued job not cancelled");
    };
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at.is_some());
    assert!(job.cancel_requested);
    assert_eq!(get(store, &queued.id).await, job);
    assert!(store.claim("w", LONG_LEASE).await.expect("claim").is_none());
    let CancelOutcome::AlreadyFinished(again) = store.cancel(&queued.id).await.expect("cancel")
    else {
        panic!("cancelling twice must report AlreadyFinished");
    };
    assert_eq!(again, job);

    let running = create(store, new_job("test")).await;
    let claim = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    assert_eq!(claim.job.id, running.id);
    let CancelOutcome::Cancelled(job) = store.cancel(&running.id).await.expect("cancel") else {
        panic!("running job not cancelled");
    };
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.cancel_requested);
    assert!(job.finished_at.is_some());
    assert_eq!(
        Lease::new(&claim.task_id, "w1", 1)
            .renew(store, LONG_LEASE, Some(0.5), None)
            .await
            .expect("renew"),
        RenewOutcome::Cancelled
    );
    assert!(!Lease::new(&claim.task_id, "w1", 1)
        .complete(store, vec![output("late.mp4")])
        .await
        .expect("complete"));
    assert_eq!(
        Lease::new(&claim.task_id, "w1", 1)
            .fail(store, ErrorDetail::new("x", "y"), None)
            .await
            .expect("fail"),
        FailOutcome::LeaseLost
    );
    Lease::new(&claim.task_id, "w1", 1)
        .release(store)
        .await
        .expect("release");
    assert_eq!(
        get(store, &running.id).await,
        job,
        "cancelled job must not change"
    );
    assert!(store
        .claim("w2", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());

    let finished = create(store, new_job("test")).await;
    let claim = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    assert!(Lease::new(&claim.task_id, "w1", 1)
        .complete(store, vec![output("a.mp4")])
        .await
        .expect("complete"));
    let CancelOutcome::AlreadyFinished(job) = store.cancel(&finished.id).await.expect("cancel")
    else {
        panic!("succeeded job must report AlreadyFinished");
    };
    assert_eq!(job.status, JobStatus::Succeeded);
    assert!(!job.cancel_requested);

    assert_eq!(
        store.cancel("test.NOSUCHJOB").await.expect("cancel"),
        CancelOutcome::NotFound
    );
}

/// A released task is claimable again at once and the released attempt is not counted.
pub async fn release(store: &dyn JobStore) {
    let job = create(store, new_job("test")).await;
    let claim = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    let eta = crate::model::now_millis() + 30_000;
    let lease = Lease::new(&claim.task_id, "w1", 1);
    lease
        .renew(store, LONG_LEASE, Some(0.4), Some(eta))
        .await
        .expect("renew");
    assert_eq!(store.running_attempts().await.unwrap()[0].eta_at, Some(eta));
    lease.release(store).await.expect("release");
    let released = get(store, &job.id).await;
    assert_eq!(released.status, JobStatus::Queued);
    assert_eq!(released.attempts, 0);
    assert_eq!(released.progress, 0.0);
    assert_eq!(
        lease
            .renew(store, LONG_LEASE, None, None)
            .await
            .expect("renew"),
        RenewOutcome::LeaseLost
    );

    let again = store
        .claim("w2", LONG_LEASE)
        .await
        .expect("claim")
        .expect("released task is claimable");
    assert_eq!(again.job.id, job.id);
    assert_eq!(again.attempt, 1);
    // The new attempt starts without the old one's finish estimate.
    let running = store.running_attempts().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].eta_at, None);
    // Same worker id and attempt number as the released claim: a stale release from w1 must
    // still not hand back w2's attempt.
    lease.release(store).await.expect("release");
    assert_eq!(get(store, &job.id).await.status, JobStatus::Running);
    assert!(Lease::new(&again.task_id, "w2", 1)
        .complete(store, vec![output("o.mp4")])
        .await
        .expect("complete"));
    assert_eq!(get(store, &job.id).await.attempts, 1);
}

/// Queue depth counts only queued and running jobs.
pub async fn counts(store: &dyn JobStore) {
    let zero = store.counts().await.expect("counts");
    assert_eq!((zero.queued, zero.running), (0, 0));
    assert_eq!(zero.queued_estimated_seconds, 0.0);

    let mut ids = Vec::new();
    for (priority, seconds) in [(9, 100.0), (0, 20.0), (0, 3.5), (0, 1000.0)] {
        let mut new = new_job("test");
        new.priority = priority;
        new.estimated_seconds = seconds;
        ids.push(create(store, new).await.id);
    }
    store.cancel(&ids[3]).await.expect("cancel");
    let claim = store
        .claim("w", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    assert_eq!(claim.job.id, ids[0]);

    let counts = store.counts().await.expect("counts");
    assert_eq!(counts.queued, 2);
    assert_eq!(counts.running, 1);
    assert!((counts.queued_estimated_seconds - 23.5).abs() < 1e-9);

    // The running attempt, with its estimate, claim time and reported progress.
    let before = crate::model::now_millis();
    let running = store.running_attempts().await.expect("running attempts");
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].estimated_seconds, 100.0);
    assert_eq!(
        running[0].eta_at, None,
        "no estimate before the worker reports one"
    );
    assert!(
        running[0].claimed_at <= before && before - running[0].claimed_at < 60_000,
        "claimed_at {} vs now {before}",
        running[0].claimed_at
    );
    assert_eq!(
        claim
            .lease("w")
            .renew(store, LONG_LEASE, Some(0.4), Some(before + 7_000))
            .await
            .expect("renew"),
        crate::model::RenewOutcome::Renewed
    );
    let running = store.running_attempts().await.expect("running attempts");
    assert_eq!(running[0].eta_at, Some(before + 7_000));

    assert!(Lease::new(&claim.task_id, "w", 1)
        .complete(store, vec![])
        .await
        .expect("complete"));
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.running), (2, 0));
    assert!(store.running_attempts().await.expect("running").is_empty());
    store.ping().await.expect("ping");
}

/// Runs the whole suite against a backend: one `#[tokio::test]` per suite function, each with a
/// fresh store from `$factory`, an async fn returning `(guard, Arc<dyn JobStore>)`.
/// Heartbeats add up to the cluster's capacity; expired and deregistered workers drop out.
pub async fn worker_registry(store: &dyn JobStore) {
    assert_eq!(store.live_capacity().await.unwrap(), 0);
    assert_eq!(store.live_speed().await.unwrap(), None);
    store
        .heartbeat("w1", 3, Duration::from_secs(60), None, &[])
        .await
        .unwrap();
    store
        .heartbeat("w2", 1, Duration::from_millis(150), Some(4.0), &[])
        .await
        .unwrap();
    assert_eq!(store.live_capacity().await.unwrap(), 4);
    assert_eq!(
        store.live_speed().await.unwrap(),
        Some(4.0),
        "only workers that know their speed count"
    );
    store
        .heartbeat("w1", 2, Duration::from_secs(60), Some(1.0), &[])
        .await
        .unwrap();
    assert_eq!(
        store.live_capacity().await.unwrap(),
        3,
        "a heartbeat replaces the slot count"
    );
    // Weighted by slots: (2 × 1.0 + 1 × 4.0) / 3.
    assert_eq!(store.live_speed().await.unwrap(), Some(2.0));
    // A heartbeat without a speed keeps the last one known.
    store
        .heartbeat("w1", 2, Duration::from_secs(60), None, &[])
        .await
        .unwrap();
    assert_eq!(store.live_speed().await.unwrap(), Some(2.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.live_capacity().await.unwrap(),
        2,
        "an expired heartbeat no longer counts"
    );
    assert_eq!(store.live_speed().await.unwrap(), Some(1.0));
    store.deregister("w1").await.unwrap();
    assert_eq!(store.live_capacity().await.unwrap(), 0);
    assert_eq!(store.live_speed().await.unwrap(), None);
}

/// A worker running peers' tasks says so in its heartbeat: they read back as running attempts
/// whose lease is the heartbeat's, the next beat replaces them, and they go with the worker.
pub async fn away_tasks_ride_the_heartbeat(store: &dyn JobStore) {
    assert!(store.live_away().await.unwrap().is_empty());
    let away = AwayTask {
        estimated_seconds: 12.0,
        progress: 0.25,
        claimed_at: 1_000,
        eta_at: Some(9_000),
    };
    let before = now_millis();
    store
        .heartbeat(
            "thief",
            1,
            Duration::from_secs(60),
            None,
            std::slice::from_ref(&away),
        )
        .await
        .unwrap();
    store
        .heartbeat("home", 2, Duration::from_secs(60), None, &[])
        .await
        .unwrap();
    let got = store.live_away().await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(
        (
            r.estimated_seconds,
            r.progress,
            r.claimed_at,
            r.eta_at,
            r.on_peer
        ),
        (12.0, 0.25, 1_000, Some(9_000), false)
    );
    let lease = r.lease_expires_at.expect("the heartbeat's expiry");
    assert!(
        lease >= before + 59_000 && lease <= now_millis() + 60_000,
        "{lease}"
    );
    // The capacity is unchanged: the slot is the thief's own, only busy.
    assert_eq!(store.live_capacity().await.unwrap(), 3);
    // The task ended: the next beat says so.
    store
        .heartbeat("thief", 1, Duration::from_millis(150), None, &[])
        .await
        .unwrap();
    assert!(store.live_away().await.unwrap().is_empty());
    // A thief that stops beating stops counting with its heartbeat.
    store
        .heartbeat("thief", 1, Duration::from_millis(150), None, &[away])
        .await
        .unwrap();
    assert_eq!(store.live_away().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.live_away().await.unwrap().is_empty());
}

/// Revocations: recorded once (the first time wins), read incrementally by `seq`, and rows
/// recorded recently are read again even below the cursor.
pub async fn revocations(store: &dyn JobStore) {
    let none = store
        .revocations_since(0, Millis::MAX, 10)
        .await
        .expect("revocations_since");
    assert!(none.is_empty());
    assert!(store
        .add_revocation("0000000000000001", 100)
        .await
        .expect("add"));
    assert!(!store
        .add_revocation("0000000000000001", 50)
        .await
        .expect("add again"));
    assert!(store
        .add_revocation("0000000000000002", 200)
        .await
        .expect("add"));
    assert!(store
        .add_revocation("0000000000000003", 300)
        .await
        .expect("add"));
    let all = store
        .revocations_since(0, Millis::MAX, 10)
        .await
        .expect("all");
    let ids: Vec<&str> = all.iter().map(|r| r.token_id.as_str()).collect();
    assert_eq!(
        ids,
        ["0000000000000001", "0000000000000002", "0000000000000003"]
    );
    assert_eq!(all[0].revoked_at, 100, "the first record wins");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    // Paged by seq.
    let first = store
        .revocations_since(0, Millis::MAX, 2)
        .await
        .expect("page");
    assert_eq!(first.len(), 2);
    let rest = store
        .revocations_since(first[1].seq, Millis::MAX, 2)
        .await
        .expect("page 2");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].token_id, "0000000000000003");
    // Past the end nothing, unless the re-check window covers recent rows.
    let last = all[2].seq;
    assert!(store
        .revocations_since(last, Millis::MAX, 10)
        .await
        .expect("end")
        .is_empty());
    let recent = store
        .revocations_since(last, now_millis() - 60_000, 10)
        .await
        .expect("recent");
    assert_eq!(
        recent.len(),
        3,
        "rows recorded in the window are read again"
    );
}

/// Tokens: created with their hash and scopes, listed, touched, revoked once; `any_tokens`
/// stays true after revocation; listing by owner shows only that owner's jobs.
pub async fn tokens_and_owners(store: &dyn JobStore) {
    assert!(!store.any_tokens().await.expect("any_tokens"));
    assert!(store.list_tokens().await.expect("list_tokens").is_empty());
    assert_eq!(store.get_token("nope").await.expect("get_token"), None);
    let before = now_millis();
    let made = store
        .create_token(crate::NewToken {
            id: "a1b2c3d4e5f6".to_string(),
            name: "ci".to_string(),
            secret_hash: "ab".repeat(32),
            scopes: vec!["submit".into(), "read".into(), "read".into()],
        })
        .await
        .expect("create_token");
    assert_eq!(made.id, "a1b2c3d4e5f6");
    assert_eq!(made.name, "ci");
    assert_eq!(made.secret_hash, "ab".repeat(32));
    assert_eq!(made.scopes, vec!["read".to_string(), "submit".to_string()]);
    assert!(made.created_at >= before);
    assert_eq!((made.last_used_at, made.revoked_at), (None, None));
    assert!(store.any_tokens().await.expect("any_tokens"));
    let duplicate = store
        .create_token(crate::NewToken {
            id: "a1b2c3d4e5f6".to_string(),
            name: "again".to_string(),
            secret_hash: "cd".repeat(32),
            scopes: vec!["admin".into()],
        })
        .await;
    assert!(duplicate.is_err(), "token ids are unique");
    store
        .create_token(crate::NewToken {
            id: "ffff00001111".to_string(),
            name: "".to_string(),
            secret_hash: "ef".repeat(32),
            scopes: vec!["admin".into()],
        })
        .await
        .expect("create_token");
    store.touch_token("a1b2c3d4e5f6").await.expect("touch");
    let listed = store.list_tokens().await.expect("list_tokens");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, "a1b2c3d4e5f6");
    assert!(listed[0].last_used_at.is_some());
    assert!(store.revoke_token("a1b2c3d4e5f6").await.expect("revoke"));
    assert!(!store.revoke_token("a1b2c3d4e5f6").await.expect("revoke"));
    assert!(!store.revoke_token("unknown").await.expect("revoke"));
    let revoked = store.get_token("a1b2c3d4e5f6").await.unwrap().unwrap();
    assert!(revoked.is_revoked());
    assert!(store.any_tokens().await.expect("any_tokens"));

    let mut mine = Vec::new();
    for i in 0..5 {
        let mut job = new_job("test");
        job.owner = Some(if i % 2 == 0 { "alice" } else { "bob" }.to_string());
        let id = create(store, job).await.id;
        if i % 2 == 0 {
            mine.push(id);
        }
    }
    let mut unowned = new_job("test");
    unowned.owner = None;
    create(store, unowned).await;
    mine.reverse();
    let (page, next) = store
        .list_jobs_of(Some("alice"), None, 2, None)
        .await
        .expect("list_jobs_of");
    assert_eq!(
        page.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        mine[..2]
    );
    let (rest, end) = store
        .list_jobs_of(Some("alice"), Some(JobStatus::Queued), 10, next.as_deref())
        .await
        .expect("list_jobs_of");
    assert_eq!(
        rest.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        mine[2..]
    );
    assert_eq!(end, None);
    let (none, _) = store
        .list_jobs_of(Some("carol"), None, 10, None)
        .await
        .expect("list_jobs_of");
    assert!(none.is_empty());
    let (all, _) = store.list_jobs(None, 100, None).await.expect("list_jobs");
    assert_eq!(all.len(), 6);
}

/// A split-and-stitch shaped job: `split` → `seg0`, `seg1` → `stitch`.
pub fn split_job(cluster: &str) -> NewJob {
    let task = |key: &str, kind: &str, deps: &[&str], weight: f64, position: i64| crate::NewTask {
        key: key.to_string(),
        kind: kind.to_string(),
        payload: serde_json::json!({ "key": key }),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        weight,
        position,
    };
    NewJob {
        tasks: vec![
            task("split", "split", &[], 1.0, 0),
            task("seg0", "encode_segment", &["split"], 4.0, 1),
            task("seg1", "encode_segment", &["split"], 4.0, 2),
            task("stitch", "stitch", &["seg0", "seg1"], 1.0, 3),
        ],
        estimated_seconds: 10.0,
        split_json: Some(r#"{"applied":true,"ranges":2}"#.into()),
        ..new_job(cluster)
    }
}

fn task_status(job: &crate::Job, key: &str) -> crate::TaskStatus {
    job.tasks
        .iter()
        .find(|t| t.id == format!("{}.{key}", job.id))
        .unwrap_or_else(|| panic!("no task {key} in {:?}", job.tasks))
        .status
}

/// Dependencies: only `split` is claimable at first; its success queues the segments (earlier
/// position first), which hand their outputs to `stitch`; the job succeeds with the sink's
/// outputs and its progress is weighted by the tasks' weights.
/// Progressive HLS: the outputs of a running job's succeeded tasks are readable before the
/// job ends, and `playable_at` is set once, only before the job ends (between two tasks the
/// job is `queued` again, and may become playable then).
pub async fn playable_while_running(store: &dyn JobStore) {
    let job = create(store, split_job("test")).await;
    assert_eq!(get(store, &job.id).await.playable_at, None);
    // The split decision is stored verbatim.
    assert_eq!(
        get(store, &job.id).await.split_json.as_deref(),
        Some(r#"{"applied":true,"ranges":2}"#)
    );
    assert_eq!(store.task_outputs(&job.id).await.expect("outputs"), vec![]);
    let split = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("split");
    let pieces = serde_json::json!({"pieces": ["p0", "p1"]});
    assert!(Lease::new(&split.task_id, "w1", 1)
        .complete_task(store, pieces.clone())
        .await
        .expect("complete split"));
    assert_eq!(
        store.task_outputs(&job.id).await.expect("outputs"),
        vec![(split.task_id.clone(), pieces)]
    );
    assert!(store.mark_playable(&job.id, 2_000).await.expect("mark"));
    assert!(
        !store.mark_playable(&job.id, 3_000).await.expect("mark"),
        "set once"
    );
    let j = get(store, &job.id).await;
    assert_eq!(j.playable_at, Some(2_000));
    assert_eq!(
        store.list_jobs(None, 10, None).await.expect("list").0[0].playable_at,
        Some(2_000)
    );
    assert!(!store.mark_playable("no-such-job", 1).await.expect("mark"));
    // An ended job does not become playable.
    let cancelled = create(store, split_job("test")).await;
    store.cancel(&cancelled.id).await.expect("cancel");
    assert!(!store.mark_playable(&cancelled.id, 1).await.expect("mark"));
    assert_eq!(get(store, &cancelled.id).await.playable_at, None);
}

pub async fn task_graph(store: &dyn JobStore) {
    use crate::TaskStatus::*;
    let job = create(store, split_job("test")).await;
    assert_eq!(job.tasks.len(), 4);
    assert_eq!(
        job.tasks.iter().map(|t| t.status).collect::<Vec<_>>(),
        vec![Queued, Blocked, Blocked, Blocked]
    );
    let split = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("split");
    assert_eq!(split.kind, "split");
    assert_eq!(split.task_id, format!("{}.split", job.id));
    assert_eq!(split.payload, serde_json::json!({"key": "split"}));
    assert!(split.dependencies.is_empty());
    assert!(
        store
            .claim("w2", LONG_LEASE)
            .await
            .expect("claim")
            .is_none(),
        "segments wait for the split"
    );
    let pieces = serde_json::json!({"pieces": ["p0", "p1"]});
    assert!(Lease::new(&split.task_id, "w1", 1)
        .complete_task(store, pieces.clone())
        .await
        .expect("complete split"));
    let after_split = get(store, &job.id).await;
    assert_eq!(task_status(&after_split, "seg0"), Queued);
    assert_eq!(task_status(&after_split, "stitch"), Blocked);
    assert!(
        (after_split.progress - 0.1).abs() < 1e-9,
        "{}",
        after_split.progress
    );

    let seg0 = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("seg0");
    let seg1 = store
        .claim("w2", LONG_LEASE)
        .await
        .expect("claim")
        .expect("seg1");
    assert_eq!(
        seg0.task_id,
        format!("{}.seg0", job.id),
        "earlier position first"
    );
    assert_eq!(seg1.task_id, format!("{}.seg1", job.id));
    assert_eq!(
        seg0.dependencies,
        vec![(split.task_id.clone(), pieces.clone())]
    );
    assert_eq!(seg0.job.id, job.id);
    assert_eq!(seg0.job.spec_json, job.spec_json);
    Lease::new(&seg0.task_id, "w1", 1)
        .renew(store, LONG_LEASE, Some(0.5), None)
        .await
        .expect("renew");
    // split 1 + seg0 half of 4 = 3 of 10.
    assert!((get(store, &job.id).await.progress - 0.3).abs() < 1e-9);
    for (claim, worker) in [(&seg0, "w1"), (&seg1, "w2")] {
        assert!(Lease::new(&claim.task_id, worker, 1)
            .complete_task(store, serde_json::json!([claim.task_id]))
            .await
            .expect("complete segment"));
    }
    let stitch = store
        .claim("w3", LONG_LEASE)
        .await
        .expect("claim")
        .expect("stitch");
    assert_eq!(stitch.kind, "stitch");
    assert_eq!(
        stitch.dependencies,
        vec![
            (seg0.task_id.clone(), serde_json::json!([seg0.task_id])),
            (seg1.task_id.clone(), serde_json::json!([seg1.task_id]))
        ]
    );
    assert_eq!(get(store, &job.id).await.status, JobStatus::Running);
    assert!(Lease::new(&stitch.task_id, "w3", 1)
        .complete(store, vec![output("out.mp4")])
        .await
        .expect("complete stitch"));
    let done = get(store, &job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        done.outputs,
        vec![output("out.mp4")],
        "only the sink's outputs"
    );
    assert_eq!(done.progress, 1.0);
    assert_eq!(done.attempts, 1);
    assert!(done
        .tasks
        .iter()
        .all(|t| t.status == Succeeded && t.attempts == 1));
    // Listings carry every job's tasks too.
    let plain = create(store, new_job("test")).await;
    let (listed, _) = store.list_jobs(None, 10, None).await.expect("list_jobs");
    assert_eq!(listed, vec![plain.clone(), done.clone()]);
    store.cancel(&plain.id).await.expect("cancel");
    assert!(store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.running), (0, 0));
}

/// Runs the split and claims both segments of a [`split_job`].
async fn split_and_claim_segments(
    store: &dyn JobStore,
    lease: Duration,
) -> (crate::Job, crate::Claim, crate::Claim) {
    let job = create(store, split_job("test")).await;
    let split = store
        .claim("w0", LONG_LEASE)
        .await
        .expect("claim")
        .expect("split");
    assert!(Lease::new(&split.task_id, "w0", 1)
        .complete_task(store, serde_json::json!({}))
        .await
        .expect("complete split"));
    let seg0 = store
        .claim("w1", lease)
        .await
        .expect("claim")
        .expect("seg0");
    let seg1 = store
        .claim("w2", lease)
        .await
        .expect("claim")
        .expect("seg1");
    (job, seg0, seg1)
}

/// A segment that fails for good fails the job with its error and stops the other tasks: the
/// other segment's worker is told "cancelled", the stitch never becomes claimable.
pub async fn failed_task_fails_the_job(store: &dyn JobStore) {
    use crate::TaskStatus::*;
    let (job, seg0, seg1) = split_and_claim_segments(store, LONG_LEASE).await;
    let err = ErrorDetail::new("encode_failed", "segment 1: ffmpeg exited with 1\0");
    assert_eq!(
        Lease::new(&seg1.task_id, "w2", 1)
            .fail(store, err, None)
            .await
            .expect("fail"),
        FailOutcome::Failed
    );
    let failed = get(store, &job.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.clone().expect("error");
    assert_eq!(error.code, "encode_failed");
    // NUL cannot be stored by Postgres; both back ends replace it the same way.
    assert_eq!(error.message, "segment 1: ffmpeg exited with 1\u{FFFD}");
    assert!(failed.finished_at.is_some());
    assert_eq!(task_status(&failed, "seg1"), Failed);
    assert_eq!(task_status(&failed, "seg0"), Cancelled);
    assert_eq!(task_status(&failed, "stitch"), Cancelled);
    let seg0_lease = Lease::new(&seg0.task_id, "w1", 1);
    assert_eq!(
        seg0_lease
            .renew(store, LONG_LEASE, Some(0.5), None)
            .await
            .expect("renew"),
        RenewOutcome::Cancelled
    );
    assert!(!seg0_lease
        .complete_task(store, serde_json::json!([]))
        .await
        .expect("complete"));
    assert!(store
        .claim("w3", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
    assert_eq!(get(store, &job.id).await, failed);
}

/// A worker that dies in the middle of a segment: only that segment runs again, the other
/// tasks' attempts are unchanged.
pub async fn lost_lease_reruns_only_that_task(store: &dyn JobStore) {
    let job = create(store, split_job("test")).await;
    let split = store
        .claim("w0", LONG_LEASE)
        .await
        .expect("claim")
        .expect("split");
    Lease::new(&split.task_id, "w0", 1)
        .complete_task(store, serde_json::json!({}))
        .await
        .expect("complete split");
    let seg0 = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("seg0");
    let seg1 = store
        .claim("w2", SHORT_LEASE)
        .await
        .expect("claim")
        .expect("seg1");
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let again = store
        .claim("w3", LONG_LEASE)
        .await
        .expect("claim")
        .expect("takeover");
    assert_eq!(again.task_id, seg1.task_id);
    assert_eq!(again.attempt, 2);
    let now = get(store, &job.id).await;
    let attempts = |key: &str| {
        now.tasks
            .iter()
            .find(|t| t.id == format!("{}.{key}", job.id))
            .map(|t| t.attempts)
    };
    assert_eq!(attempts("split"), Some(1));
    assert_eq!(attempts("seg0"), Some(1));
    assert_eq!(attempts("seg1"), Some(2));
    assert_eq!(now.status, JobStatus::Running);
    assert_eq!(
        Lease::new(&seg0.task_id, "w1", 1)
            .renew(store, LONG_LEASE, None, None)
            .await
            .expect("renew"),
        RenewOutcome::Renewed,
        "the other segment carries on"
    );
    assert_eq!(
        Lease::new(&seg1.task_id, "w2", 1)
            .renew(store, LONG_LEASE, None, None)
            .await
            .expect("renew"),
        RenewOutcome::LeaseLost
    );
}

/// Cancel stops every task of a running multi-task job.
pub async fn cancel_stops_every_task(store: &dyn JobStore) {
    let (job, seg0, seg1) = split_and_claim_segments(store, LONG_LEASE).await;
    let CancelOutcome::Cancelled(cancelled) = store.cancel(&job.id).await.expect("cancel") else {
        panic!("not cancelled");
    };
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        task_status(&cancelled, "split"),
        crate::TaskStatus::Succeeded
    );
    for key in ["seg0", "seg1", "stitch"] {
        assert_eq!(task_status(&cancelled, key), crate::TaskStatus::Cancelled);
    }
    for (claim, worker) in [(&seg0, "w1"), (&seg1, "w2")] {
        assert_eq!(
            Lease::new(&claim.task_id, worker, 1)
                .renew(store, LONG_LEASE, None, None)
                .await
                .expect("renew"),
            RenewOutcome::Cancelled
        );
    }
    assert!(store
        .claim("w3", LONG_LEASE)
        .await
        .expect("claim")
        .is_none());
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.queued, counts.running), (0, 0));
}

/// Every status change appends one event, numbered per job, in the same transaction; a retry
/// shows as `queued` again.
pub async fn job_events(store: &dyn JobStore) {
    let mut new = new_job("test");
    new.max_attempts = 2;
    let job = create(store, new).await;
    let other = create(store, new_job("test")).await;
    let claim = store
        .claim("w", LONG_LEASE)
        .await
        .expect("claim")
        .expect("claimable");
    assert_eq!(claim.job.id, job.id);
    let lease = Lease::new(&claim.task_id, "w", 1);
    lease
        .renew(store, LONG_LEASE, Some(0.5), None)
        .await
        .expect("renew");
    lease
        .fail(
            store,
            ErrorDetail::new("fetch_failed", "503"),
            Some(Duration::from_millis(1)),
        )
        .await
        .expect("fail");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let claim = store
        .claim("w", LONG_LEASE)
        .await
        .expect("claim")
        .expect("retry");
    assert!(Lease::new(&claim.task_id, "w", 2)
        .complete(store, vec![output("o.mp4")])
        .await
        .expect("complete"));
    let events = store.job_events(&job.id, 0, 100).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["created", "running", "queued", "running", "succeeded"]
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(events
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].at <= w[1].at));
    assert_eq!(events[2].payload["error"]["code"], "fetch_failed");
    assert_eq!(events[4].payload["status"], "succeeded");
    let later = store.job_events(&job.id, 3, 100).await.expect("events");
    assert_eq!(later.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    // The outbox sees every job's events in id order.
    let all = store.events_after(0, 100).await.expect("outbox");
    assert!(all
        .iter()
        .any(|e| e.job_id == other.id && e.kind == "created"));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let after = store.events_after(all[2].id, 2).await.expect("outbox");
    assert_eq!(after, all[3..5].to_vec());
    store.cancel(&other.id).await.expect("cancel");
    let cancelled = store.job_events(&other.id, 1, 10).await.expect("events");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].kind, "cancelled");
}

/// Task lists that break the model are refused before anything is stored.
pub async fn invalid_task_lists(store: &dyn JobStore) {
    let mut empty = new_job("test");
    empty.tasks.clear();
    let mut forward = split_job("test");
    forward.tasks.swap(0, 1);
    let mut twice = split_job("test");
    twice.tasks[2].key = "seg0".into();
    let mut bad_key = new_job("test");
    bad_key.tasks[0].key = "Bad Key".into();
    for new in [empty, forward, twice, bad_key] {
        let id = new.id.clone();
        assert!(
            matches!(
                store.create_job(new).await,
                Err(StoreError::InvalidTasks(_))
            ),
            "{id}"
        );
        assert_eq!(store.get_job(&id).await.expect("get"), None);
    }
}

/// Eight workers race over the pieces of ONE job (24 segments, then a stitch that needs them
/// all), completing each as they go, as split-and-stitch will: every task runs exactly once,
/// the stitch only after every segment, no claim or completion errors (a lock-order mistake in
/// Postgres would show as deadlock errors here), and the job succeeds with the stitch's outputs.
pub async fn concurrent_claims_of_one_job(store: Arc<dyn JobStore>) {
    const SEGMENTS: usize = 24;
    let mut tasks: Vec<crate::NewTask> = (0..SEGMENTS)
        .map(|i| crate::NewTask {
            key: format!("seg{i}"),
            kind: "encode_segment".into(),
            payload: serde_json::json!({ "index": i }),
            depends_on: vec![],
            weight: 1.0,
            position: i as i64,
        })
        .collect();
    tasks.push(crate::NewTask {
        key: "stitch".into(),
        kind: "stitch".into(),
        payload: serde_json::json!({}),
        depends_on: (0..SEGMENTS).map(|i| format!("seg{i}")).collect(),
        weight: 1.0,
        position: SEGMENTS as i64,
    });
    let job = create(
        &*store,
        NewJob {
            tasks,
            ..new_job("test")
        },
    )
    .await;
    let mut handles = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let job_id = job.id.clone();
        handles.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            for _ in 0..400 {
                let Some(claim) = store.claim(&worker, LONG_LEASE).await.expect("claim") else {
                    if get(&*store, &job_id).await.status.is_terminal() {
                        break;
                    }
                    // Another claimer holds the job row, or the stitch waits for segments.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let outputs = if claim.kind == "stitch" {
                    assert_eq!(claim.dependencies.len(), SEGMENTS);
                    serde_json::json!([output("joined.mp4")])
                } else {
                    serde_json::json!({ "piece": claim.payload["index"] })
                };
                assert!(claim
                    .lease(&worker)
                    .complete_task(&*store, outputs)
                    .await
                    .expect("complete"));
                mine.push((claim.task_id, claim.kind));
            }
            mine
        }));
    }
    let mut done = Vec::new();
    for handle in handles {
        done.extend(handle.await.expect("worker panicked"));
    }
    let unique: HashSet<&String> = done.iter().map(|(id, _)| id).collect();
    assert_eq!(
        done.len(),
        SEGMENTS + 1,
        "a task ran twice or never: {done:?}"
    );
    assert_eq!(unique.len(), SEGMENTS + 1);
    let finished = get(&*store, &job.id).await;
    assert_eq!(finished.status, JobStatus::Succeeded);
    assert_eq!(finished.outputs, vec![output("joined.mp4")]);
    assert!(finished.tasks.iter().all(|t| t.attempts == 1));
}

/// Webhook delivery rows: made once however often enqueued, claimed in order per job and
/// endpoint, leased to one owner (only it records), retried when due, taken over when the lease
/// expires, listed with their attempts, redelivered by hand; the outbox cursor only moves forward.
pub async fn webhook_deliveries(store: &dyn JobStore) {
    use crate::webhooks::{AttemptOutcome, DeliveryAttempt, NewDelivery};
    let job = create(store, new_job("test")).await;
    let row = |seq: i64, endpoint: &str| NewDelivery {
        id: format!("msg_{seq}_{endpoint}"),
        job_id: job.id.clone(),
        endpoint: endpoint.into(),
        url: "https://hooks.example.com/".into(),
        event_id: 100 + seq,
        seq,
        kind: "job.created".into(),
        body: "{}".into(),
    };
    let rows = vec![row(1, "notify:0"), row(2, "notify:0"), row(1, "sub:ops")];
    assert_eq!(
        store
            .enqueue_deliveries(rows.clone())
            .await
            .expect("enqueue"),
        3
    );
    assert_eq!(store.enqueue_deliveries(rows).await.expect("again"), 0);
    let lease = Duration::from_secs(30);
    let now = crate::model::now_millis();
    let seqs = |ds: &[crate::webhooks::Delivery]| {
        let mut v: Vec<_> = ds
            .iter()
            .map(|d| (d.endpoint.clone(), d.seq, d.attempts))
            .collect();
        v.sort();
        v
    };
    let a = store
        .claim_deliveries("a", lease, now, 10)
        .await
        .expect("claim");
    assert_eq!(
        seqs(&a),
        [
            ("notify:0".to_string(), 1, 1),
            ("sub:ops".to_string(), 1, 1)
        ]
    );
    assert!(store
        .claim_deliveries("b", lease, now, 10)
        .await
        .expect("claim")
        .is_empty());
    let attempt = |n: u32, code: u16| DeliveryAttempt {
        delivery_id: "msg_1_notify:0".into(),
        n,
        at: now,
        status_code: Some(code),
        latency_ms: 5,
        error: (code >= 300).then(|| format!("HTTP {code}")),
    };
    let retry = AttemptOutcome::RetryAt(now + 1000);
    assert!(!store
        .record_attempt("b", attempt(1, 503), retry)
        .await
        .expect("record"));
    assert!(store
        .record_attempt("a", attempt(1, 503), retry)
        .await
        .expect("record"));
    assert!(store
        .claim_deliveries("b", lease, now, 10)
        .await
        .expect("claim")
        .is_empty());
    let b = store
        .claim_deliveries("b", lease, now + 1000, 10)
        .await
        .expect("claim");
    assert_eq!(seqs(&b), [("notify:0".to_string(), 1, 2)]);
    assert!(store
        .record_attempt("b", attempt(2, 204), AttemptOutcome::Delivered)
        .await
        .expect("record"));
    let c = store
        .claim_deliveries("c", lease, now + 1000, 10)
        .await
        .expect("claim");
    assert_eq!(seqs(&c), [("notify:0".to_string(), 2, 1)]);
    let d = store
        .claim_deliveries("d", lease, now + 32_000, 10)
        .await
        .expect("claim");
    assert_eq!(
        seqs(&d),
        [
            ("notify:0".to_string(), 2, 2),
            ("sub:ops".to_string(), 1, 2)
        ]
    );
    let listed = store.job_deliveries(&job.id).await.expect("list");
    let first = listed
        .iter()
        .find(|(d, _)| d.id == "msg_1_notify:0")
        .expect("first");
    assert_eq!(first.0.state, "delivered");
    assert_eq!(
        first.1.iter().map(|a| a.status_code).collect::<Vec<_>>(),
        [Some(503), Some(204)]
    );
    assert!(store
        .redeliver(&job.id, "msg_1_notify:0", now + 40_000)
        .await
        .expect("redeliver"));
    assert!(!store
        .redeliver("other.job", "msg_1_notify:0", now)
        .await
        .expect("redeliver"));
    let again = store.job_deliveries(&job.id).await.expect("list");
    assert!(again
        .iter()
        .any(|(d, _)| d.id == "msg_1_notify:0" && d.state == "pending"));
    store.advance_webhook_cursor(7).await.expect("cursor");
    store.advance_webhook_cursor(5).await.expect("cursor");
    assert_eq!(store.webhook_cursor().await.expect("cursor"), 7);
}

/// Retention: only finished jobs past their cutoff are claimed, each by one sweeper at a time;
/// a succeeded job loses its inputs first and everything later; purging leaves a tombstone.
pub async fn retention_claims_and_tombstones(store: &dyn JobStore) {
    use crate::model::{Purge, RetentionCutoffs};
    let queued = create(store, new_job("test")).await;
    let done = create(store, new_job("test")).await;
    let claim = store
        .claim("w", LONG_LEASE)
        .await
        .expect("claim")
        .expect("one");
    let ok = claim
        .lease("w")
        .complete(store, vec![output("a.mp4")])
        .await
        .expect("complete");
    assert!(ok);
    let cancelled = create(store, new_job("test")).await;
    store.cancel(&cancelled.id).await.expect("cancel");
    // Whichever of the two was not claimed is still waiting.
    let waiting = if claim.job.id == queued.id {
        done
    } else {
        queued
    };
    let far_past = 0;
    let future = now_millis() + 60_000;
    let none = RetentionCutoffs {
        inputs_after_success: far_past,
        succeeded: far_past,
        failed: far_past,
        cancelled: far_past,
    };
    assert!(store
        .claim_expired(none, LONG_LEASE, 10)
        .await
        .expect("claim")
        .is_empty());

    // Inputs of successes due: only the succeeded job, once while its lease lasts.
    let inputs = RetentionCutoffs {
        inputs_after_success: future,
        ..none
    };
    let got = store
        .claim_expired(inputs, LONG_LEASE, 10)
        .await
        .expect("claim");
    let ids: Vec<&str> = got.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec![claim.job.id.as_str()]);
    assert_eq!(got[0].tasks.len(), 1, "claimed jobs come with their tasks");
    assert!(store
        .claim_expired(inputs, LONG_LEASE, 10)
        .await
        .expect("claim")
        .is_empty());
    let after = store
        .mark_purged(&claim.job.id, Purge::Inputs)
        .await
        .expect("mark")
        .expect("finished");
    assert!(after.inputs_deleted_at.is_some());
    assert!(after.deleted_at.is_none());
    assert_eq!(after.outputs, vec![output("a.mp4")]);
    assert!(store
        .claim_expired(inputs, LONG_LEASE, 10)
        .await
        .expect("claim")
        .is_empty());

    // Everything due: the succeeded and the cancelled job, never the queued one.
    let all = RetentionCutoffs {
        inputs_after_success: future,
        succeeded: future,
        failed: future,
        cancelled: future,
    };
    let mut got: Vec<String> = store
        .claim_expired(all, Duration::from_millis(1), 10)
        .await
        .expect("claim")
        .into_iter()
        .map(|j| j.id)
        .collect();
    got.sort();
    let mut want = vec![claim.job.id.clone(), cancelled.id.clone()];
    want.sort();
    assert_eq!(got, want);

    // A lapsed lease lets another sweeper take the job again.
    sleep_until(now_millis() + 5).await;
    assert_eq!(
        store
            .claim_expired(all, LONG_LEASE, 10)
            .await
            .expect("claim")
            .len(),
        2
    );
    for id in &want {
        let tomb = store
            .mark_purged(id, Purge::All)
            .await
            .expect("mark")
            .expect("finished");
        assert!(tomb.deleted_at.is_some() && tomb.inputs_deleted_at.is_some());
        assert!(tomb.outputs.is_empty());
        assert!(tomb.status.is_terminal(), "the status is kept");
        // Idempotent: the first deletion time stays.
        let again = store
            .mark_purged(id, Purge::All)
            .await
            .expect("mark")
            .expect("x");
        assert_eq!(again.deleted_at, tomb.deleted_at);
    }
    assert!(store
        .claim_expired(all, LONG_LEASE, 10)
        .await
        .expect("claim")
        .is_empty());
    assert!(
        store
            .mark_purged(&waiting.id, Purge::All)
            .await
            .expect("mark")
            .is_none(),
        "an unfinished job is never purged"
    );
    assert!(get(store, &waiting.id).await.deleted_at.is_none());
}

/// A completion stores the attempt's phase timings with it (shown on the job's task, read back
/// by `get_job` and `list_jobs`); a completion that does not apply stores none.
pub async fn task_timings(store: &dyn JobStore) {
    let job = create(store, new_job("aws")).await;
    let claim = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("a task");
    assert_eq!(get(store, &job.id).await.tasks[0].timings, None);
    let timings: crate::PhaseTimings = [("encode".to_string(), 7.25), ("probe".to_string(), 0.04)]
        .into_iter()
        .collect();
    // Not the holder: nothing changes, no timings are written.
    let stale = claim
        .lease("w2")
        .complete_task_timed(store, serde_json::json!([]), Some(&timings))
        .await
        .expect("complete by another worker");
    assert!(!stale);
    assert_eq!(get(store, &job.id).await.tasks[0].timings, None);
    let done = claim
        .lease("w1")
        .complete_task_timed(
            store,
            crate::ops::files_json(&[output("a.mp4")]).unwrap(),
            Some(&timings),
        )
        .await
        .expect("complete");
    assert!(done);
    let got = get(store, &job.id).await;
    assert_eq!(got.status, JobStatus::Succeeded);
    assert_eq!(got.tasks[0].timings.as_ref(), Some(&timings));
    let (all, _) = store.list_jobs(None, 100, None).await.expect("list_jobs");
    let listed = all.iter().find(|j| j.id == job.id).expect("listed");
    assert_eq!(listed.tasks[0].timings.as_ref(), Some(&timings));
}

/// The remote claim (issue 16): a peer takes only the kinds it is offered and only tasks ready
/// long enough, whatever the job's input (upload, URL or key); the claim records
/// `ran_on`; a task moves at most once (after a release, and after its lease expired, only home
/// takes it); a home claim records the job's cluster.
pub async fn peer_claims(store: &dyn JobStore) {
    let peer = |ready_for| crate::PeerClaim {
        peer: "gcp",
        kinds: &[crate::TRANSCODE],
        ready_for,
        task: None,
    };
    // A key input moves like an upload (the owner serves it to the peer as the job's source).
    let keyed = create(store, new_job("aws")).await;
    let mut upload = new_job("aws");
    upload.input_key = Some(format!("inputs/{}/source", upload.id));
    let upload = create(store, upload).await;
    // Not ready long enough yet; other kinds are not offered.
    assert!(store
        .claim_for_peer(peer(Duration::from_secs(3600)), "peer:gcp:w1", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .is_none());
    let other_kind = crate::PeerClaim {
        peer: "gcp",
        kinds: &["stitch"],
        ready_for: Duration::ZERO,
        task: None,
    };
    assert!(store
        .claim_for_peer(other_kind, "peer:gcp:w1", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .is_none());
    let mut claims = Vec::new();
    for (want, name) in [(&keyed, "key input"), (&upload, "upload")] {
        let claim = store
            .claim_for_peer(
                peer(Duration::ZERO),
                "peer:gcp:w1",
                Duration::from_millis(200),
            )
            .await
            .expect("claim_for_peer")
            .unwrap_or_else(|| panic!("the {name} job's task, oldest first"));
        assert_eq!(claim.job.id, want.id, "{name}");
        assert_eq!(claim.attempt, 1);
        assert_eq!(
            get(store, &want.id).await.tasks[0].ran_on.as_deref(),
            Some("gcp")
        );
        claims.push(claim);
    }
    // Released: never offered to a peer again.
    for claim in &claims {
        store
            .release(&claim.task_id, "peer:gcp:w1", 1)
            .await
            .expect("release");
    }
    assert!(store
        .claim_for_peer(peer(Duration::ZERO), "peer:gcp:w2", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .is_none());
    // Home takes both, and says so.
    for _ in 0..2 {
        store
            .claim("w-home", LONG_LEASE)
            .await
            .expect("claim")
            .expect("a task at home");
    }
    for id in [&keyed.id, &upload.id] {
        assert_eq!(get(store, id).await.tasks[0].ran_on.as_deref(), Some("aws"));
    }
    // A peer's lease that expires goes home too, never to a peer.
    let mut url = new_job("aws");
    url.input_key = None;
    url.input_url = Some("https://example.com/in.mp4".into());
    let url = create(store, url).await;
    let lost = store
        .claim_for_peer(
            peer(Duration::ZERO),
            "peer:gcp:w3",
            Duration::from_millis(100),
        )
        .await
        .expect("claim_for_peer")
        .expect("the url job's task");
    assert_eq!(lost.job.id, url.id);
    // A peer's renewal within its hold limit extends the lease; past it, it is refused and
    // changes nothing (the lease runs out as if the peer had vanished).
    assert_eq!(
        store
            .renew_held(
                &lost.task_id,
                "peer:gcp:w3",
                1,
                Duration::from_millis(100),
                Some(0.5),
                None,
                Duration::from_secs(3600)
            )
            .await
            .expect("renew_held"),
        RenewOutcome::Renewed
    );
    assert_eq!(
        store
            .renew_held(
                &lost.task_id,
                "peer:gcp:w3",
                1,
                LONG_LEASE,
                Some(0.6),
                None,
                Duration::ZERO
            )
            .await
            .expect("renew_held"),
        RenewOutcome::LeaseLost
    );
    // The renewed lease (100 ms) runs out: had the refused renewal extended it (to
    // LONG_LEASE), home could not take the task below.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sleep_until(lost.lease_expires_at).await;
    assert!(store
        .claim_for_peer(peer(Duration::ZERO), "peer:gcp:w4", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .is_none());
    let home = store
        .claim("w-home2", LONG_LEASE)
        .await
        .expect("claim")
        .expect("the expired task at home");
    assert_eq!(home.task_id, lost.task_id);
    assert_eq!(home.attempt, 2);
    let back = get(store, &url.id).await;
    assert_eq!(back.tasks[0].ran_on.as_deref(), Some("aws"));
}

/// A peer is offered the longest of the tasks at the front of the line (longest processing time
/// first: the short ones are left for the end), within the front priority, ties in claim order,
/// and never one further back than `OFFER_WINDOW` tasks.
pub async fn peer_offers_take_the_longest_of_the_front(store: &dyn JobStore) {
    let peer = crate::PeerClaim {
        peer: "gcp",
        kinds: &[crate::TRANSCODE],
        ready_for: Duration::ZERO,
        task: None,
    };
    let job = |seconds: f64, priority: i32| {
        let mut j = new_job("aws");
        j.estimated_seconds = seconds;
        j.tasks = vec![crate::NewTask::transcode(seconds)];
        j.priority = priority;
        j
    };
    let offered = || async {
        store
            .peer_offer(peer)
            .await
            .expect("offer")
            .map(|o| o.task_id)
    };
    let short = create(store, job(5.0, 0)).await;
    assert_eq!(offered().await, Some(short.tasks[0].id.clone()));
    let long = create(store, job(30.0, 0)).await;
    let _middle = create(store, job(12.0, 0)).await;
    let same = create(store, job(30.0, 0)).await;
    // The longest, and of two as long, the one in line first.
    assert_eq!(offered().await, Some(long.tasks[0].id.clone()));
    assert_ne!(long.tasks[0].id, same.tasks[0].id);
    // A higher priority comes first whatever its length.
    let urgent = create(store, job(1.0, 5)).await;
    assert_eq!(offered().await, Some(urgent.tasks[0].id.clone()));
    store.cancel(&urgent.id).await.expect("cancel");
    assert_eq!(offered().await, Some(long.tasks[0].id.clone()));
    // A longer task further back than the window is not taken ahead of those in front.
    for _ in 0..crate::ops::OFFER_WINDOW {
        create(store, job(2.0, 0)).await;
    }
    let _far = create(store, job(500.0, 0)).await;
    assert_eq!(offered().await, Some(long.tasks[0].id.clone()));
}

/// What a cluster offers its peers (issue 16, part 2) is exactly what a peer's claim would take
/// now: the oldest claimable task (with how long it waited, its weight, the input's recorded
/// size and the job's output count); a job whose split is still `pending` is neither offered
/// nor claimed (its graph can only grow at home); a claim that names a task takes exactly that
/// task or nothing; a peer's attempt released before it began may move again, one released
/// after it began may not.
pub async fn peer_offers_and_exact_claims(store: &dyn JobStore) {
    let peer = |task: Option<&'static str>| crate::PeerClaim {
        peer: "gcp",
        kinds: &[crate::TRANSCODE],
        ready_for: Duration::ZERO,
        task,
    };
    let uploaded = |facts: Option<u64>| {
        let mut j = new_job("aws");
        j.input_key = Some(format!("inputs/{}/source", j.id));
        j.spec_json = r#"{"outputs":[{"preset":"mp4-720p"},{"preset":"mp4-360p"}]}"#.into();
        j.input_facts = facts.map(|size| reelay_protocol::InputFacts {
            size: Some(size),
            ..Default::default()
        });
        j
    };
    assert_eq!(store.peer_offer(peer(None)).await.expect("offer"), None);
    // A URL input whose first task has not decided the split yet: home only.
    let mut pending = new_job("aws");
    pending.input_key = None;
    pending.input_url = Some("https://example.com/long.mp4".into());
    pending.split_json = Some(
        serde_json::json!({"applied": false, "reason": "pending", "message": "probed later"})
            .to_string(),
    );
    let pending = create(store, pending).await;
    assert_eq!(store.peer_offer(peer(None)).await.expect("offer"), None);
    let pending_task: &'static str = Box::leak(pending.tasks[0].id.clone().into_boxed_str());
    assert!(store
        .claim_for_peer(peer(Some(pending_task)), "peer:gcp:w0", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .is_none());

    let before = now_millis();
    let first = create(store, uploaded(Some(5_000_000))).await;
    sleep_until(now_millis() + 20).await;
    let second = create(store, uploaded(None)).await;
    let offer = store
        .peer_offer(peer(None))
        .await
        .expect("offer")
        .expect("the oldest uploaded job's task");
    assert_eq!(offer.task_id, first.tasks[0].id);
    assert_eq!(offer.kind, crate::TRANSCODE);
    assert!(offer.ready_since >= before && offer.ready_since <= now_millis());
    assert_eq!(offer.weight, 10.0);
    assert_eq!(offer.input_size, Some(5_000_000));
    assert_eq!(offer.input_key, first.input_key);
    assert_eq!(offer.outputs, 2);
    // Ready for less than asked: not offered.
    let patient = crate::PeerClaim {
        ready_for: Duration::from_secs(3600),
        ..peer(None)
    };
    assert_eq!(store.peer_offer(patient).await.expect("offer"), None);

    // A claim naming the second task takes exactly it, although the first is older.
    let second_task: &'static str = Box::leak(second.tasks[0].id.clone().into_boxed_str());
    let claim = store
        .claim_for_peer(peer(Some(second_task)), "peer:gcp:w1", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .expect("the named task");
    assert_eq!(claim.task_id, second_task);
    // Named again: it is no longer claimable, so nothing (not another task).
    assert!(store
        .claim_for_peer(peer(Some(second_task)), "peer:gcp:w2", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .is_none());
    assert!(store
        .claim_for_peer(
            peer(Some("aws.nosuch.transcode")),
            "peer:gcp:w2",
            LONG_LEASE
        )
        .await
        .expect("claim_for_peer")
        .is_none());
    // The offer now is the first task: the claimed one is running under a live lease.
    assert_eq!(
        store
            .peer_offer(peer(None))
            .await
            .expect("offer")
            .map(|o| o.task_id),
        Some(first.tasks[0].id.clone())
    );

    // Released before it began: it may move again, and its view forgets where it ran.
    store
        .release_unstarted(second_task, "peer:gcp:w1", 1)
        .await
        .expect("release_unstarted");
    let back = get(store, &second.id).await;
    assert_eq!(back.tasks[0].ran_on, None);
    assert_eq!(back.tasks[0].attempts, 0);
    let again = store
        .claim_for_peer(peer(Some(second_task)), "peer:gcp:w3", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .expect("a task released before it began moves again");
    assert_eq!(again.attempt, 1);
    // Released after it began: never offered again.
    store
        .release(second_task, "peer:gcp:w3", 1)
        .await
        .expect("release");
    assert!(store
        .claim_for_peer(peer(Some(second_task)), "peer:gcp:w4", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .is_none());
    // Only the holder's release forgets anything.
    let first_task: &'static str = Box::leak(first.tasks[0].id.clone().into_boxed_str());
    store
        .claim_for_peer(peer(Some(first_task)), "peer:gcp:w5", LONG_LEASE)
        .await
        .expect("claim_for_peer")
        .expect("the first task");
    store
        .release_unstarted(first_task, "peer:gcp:someone-else", 1)
        .await
        .expect("release_unstarted");
    let held = get(store, &first.id).await;
    assert_eq!(held.tasks[0].ran_on.as_deref(), Some("gcp"));
    assert_eq!(held.tasks[0].status, crate::TaskStatus::Running);
    // Home still runs the pending job's task.
    let home = store
        .claim("w-home", LONG_LEASE)
        .await
        .expect("claim")
        .expect("the pending job's task at home");
    assert_eq!(home.job.id, pending.id);
}

/// A running task grows its job's graph with its success ([`JobStore::grow`]): the new tasks
/// exist at once (roots queued, the rest blocked), are claimed in position order with the
/// grown task's outputs as their dependency, the job's estimate, split decision and input
/// change with them, events stay one per status change, and the job succeeds with the new
/// sink's outputs only. Not the holder, or a cancelled job: nothing changes.
pub async fn graph_grows(store: &dyn JobStore) {
    use crate::TaskStatus;
    let mut new = new_job("test");
    new.input_key = None;
    new.input_url = Some("https://example.com/in.mp4".into());
    let job = create(store, new).await;
    let claim = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("the transcode task");
    let t = |key: &str, kind: &str, deps: &[&str], weight: f64, position: i64| crate::NewTask {
        key: key.into(),
        kind: kind.into(),
        payload: serde_json::json!({ "key": key }),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        weight,
        position,
    };
    let growth = crate::Growth {
        tasks: vec![
            t("split", "split", &["transcode"], 1.0, 0),
            t("seg-1", "encode_segment", &["split"], 4.0, 1),
            t("seg-0", "encode_segment", &["split"], 4.0, 0),
            t("audio", "encode_audio", &["transcode"], 1.0, 0),
            t("stitch", "stitch", &["seg-0", "seg-1", "audio"], 0.0, 2),
        ],
        estimated_seconds: 100.0,
        grower_weight: 2.0,
        split_json: Some(r#"{"applied":true,"segment_seconds":4,"ranges":2}"#.into()),
        input_key: Some(format!("inputs/{}/source", job.id)),
    };
    let probed = serde_json::json!({ "probed": true });
    // Another worker's attempt grows nothing.
    assert!(!store
        .grow(
            &claim.task_id,
            "w2",
            claim.attempt,
            probed.clone(),
            &growth,
            None
        )
        .await
        .expect("grow by another worker"));
    assert_eq!(get(store, &job.id).await.tasks.len(), 1);
    // A graph that does not hold together is refused, and nothing is stored.
    let mut dangling = growth.clone();
    dangling.tasks[0].depends_on = vec!["nowhere".into()];
    assert!(matches!(
        store
            .grow(
                &claim.task_id,
                "w1",
                claim.attempt,
                probed.clone(),
                &dangling,
                None
            )
            .await,
        Err(StoreError::InvalidTasks(_))
    ));
    assert_eq!(get(store, &job.id).await.tasks.len(), 1);

    assert!(store
        .grow(
            &claim.task_id,
            "w1",
            claim.attempt,
            probed.clone(),
            &growth,
            None
        )
        .await
        .expect("grow"));
    let grown = get(store, &job.id).await;
    assert_eq!(grown.status, JobStatus::Queued);
    assert_eq!(grown.estimated_seconds, 100.0);
    assert_eq!(grown.split_json, growth.split_json);
    assert_eq!(grown.input_key, growth.input_key);
    assert_eq!(
        grown.input_url.as_deref(),
        Some("https://example.com/in.mp4")
    );
    let status = |id: &str| {
        grown
            .tasks
            .iter()
            .find(|x| x.id == format!("{}.{id}", job.id))
            .map(|x| x.status)
    };
    assert_eq!(status("transcode"), Some(TaskStatus::Succeeded));
    assert_eq!(status("split"), Some(TaskStatus::Queued));
    assert_eq!(status("audio"), Some(TaskStatus::Queued));
    assert_eq!(status("seg-0"), Some(TaskStatus::Blocked));
    assert_eq!(status("stitch"), Some(TaskStatus::Blocked));
    // Progress: the grower (2 of 102 encode seconds) is done.
    assert!(
        (grown.progress - 2.0 / 102.0).abs() < 1e-6,
        "{}",
        grown.progress
    );
    // A second success of the same attempt is no second completion.
    assert!(!store
        .grow(
            &claim.task_id,
            "w1",
            claim.attempt,
            probed.clone(),
            &growth,
            None
        )
        .await
        .expect("grow again"));

    // The grown tasks run like any: roots first, then the segments by position, each seeing
    // its dependencies' outputs.
    let mut order = vec![];
    while let Some(c) = store.claim("w1", LONG_LEASE).await.expect("claim") {
        order.push(c.payload["key"].as_str().unwrap_or_default().to_string());
        if c.kind == "split" {
            assert_eq!(c.dependencies.len(), 1);
            assert_eq!(c.dependencies[0].1, probed);
        }
        let outputs = if c.kind == "stitch" {
            crate::ops::files_json(&[output("out.mp4")]).unwrap()
        } else {
            serde_json::json!({ "done": c.payload["key"] })
        };
        assert!(store
            .complete_task(&c.task_id, "w1", c.attempt, outputs)
            .await
            .expect("complete"));
    }
    assert_eq!(order.len(), 5, "{order:?}");
    let seg0 = order.iter().position(|k| k == "seg-0").expect("seg-0");
    let seg1 = order.iter().position(|k| k == "seg-1").expect("seg-1");
    assert!(seg0 < seg1, "earlier pieces first: {order:?}");
    assert_eq!(order.last().map(String::as_str), Some("stitch"));
    let done = get(store, &job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.outputs.len(), 1);
    assert_eq!(done.outputs[0].name, "out.mp4");
    let kinds: Vec<String> = store
        .job_events(&job.id, 0, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("created"));
    assert_eq!(kinds.last().map(String::as_str), Some("succeeded"));
    assert!(kinds.windows(2).all(|w| w[0] != w[1]), "{kinds:?}");

    // A job that stays one task records why instead.
    assert!(store
        .set_split_view(&job.id, r#"{"applied":false,"reason":"too_short"}"#)
        .await
        .expect("set_split_view"));
    assert_eq!(
        get(store, &job.id).await.split_json.as_deref(),
        Some(r#"{"applied":false,"reason":"too_short"}"#)
    );
    assert!(!store
        .set_split_view("test.nope", "{}")
        .await
        .expect("no job"));

    // A cancelled job does not grow.
    let other = create(store, new_job("test")).await;
    let c = store
        .claim("w1", LONG_LEASE)
        .await
        .expect("claim")
        .expect("the other job");
    assert_eq!(c.job.id, other.id);
    store.cancel(&other.id).await.expect("cancel");
    assert!(!store
        .grow(&c.task_id, "w1", c.attempt, probed, &growth, None)
        .await
        .expect("grow a cancelled job"));
    let after = get(store, &other.id).await;
    assert_eq!(after.tasks.len(), 1);
    assert_eq!(after.status, JobStatus::Cancelled);
}

/// What the load report needs of each running attempt (issue 16): its lease expiry, so a dead
/// worker's lapsed attempt is charged as queued work, and whether a peer runs it (a stolen
/// task occupies no home slot). A peer's lapsed attempt taken over at home runs at home again.
pub async fn running_attempts_know_lapses_and_peers(store: &dyn JobStore) {
    // Older, so the home claim takes it.
    let home_job = create(store, new_job("aws")).await;
    let mut upload = new_job("aws");
    upload.input_key = Some(format!("inputs/{}/source", upload.id));
    let upload = create(store, upload).await;
    let home = store
        .claim("w-home", LONG_LEASE)
        .await
        .expect("claim")
        .expect("a task at home");
    assert_eq!(home.job.id, home_job.id);
    let peer = crate::PeerClaim {
        peer: "gcp",
        kinds: &[crate::TRANSCODE],
        ready_for: Duration::ZERO,
        task: None,
    };
    let stolen = store
        .claim_for_peer(peer, "peer:gcp:w1", SHORT_LEASE)
        .await
        .expect("claim_for_peer")
        .expect("the uploaded job's task");
    assert_eq!(stolen.job.id, upload.id);
    let by_lease = |running: &[crate::RunningAttempt], at: Millis| {
        running
            .iter()
            .find(|r| r.lease_expires_at == Some(at))
            .copied()
            .unwrap_or_else(|| panic!("no attempt with lease {at}: {running:?}"))
    };
    let running = store.running_attempts().await.expect("running attempts");
    assert_eq!(running.len(), 2, "{running:?}");
    let at_home = by_lease(&running, home.lease_expires_at);
    assert!(!at_home.on_peer, "{at_home:?}");
    let on_peer = by_lease(&running, stolen.lease_expires_at);
    assert!(on_peer.on_peer, "{on_peer:?}");
    assert!(stolen.lease_expires_at < home.lease_expires_at);

    // The peer's worker vanished: the lapsed attempt still reads as running on the peer (the
    // report judges the lapse with its own clock), until a home worker takes it over.
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let running = store.running_attempts().await.expect("running attempts");
    let lapsed = by_lease(&running, stolen.lease_expires_at);
    assert!(lapsed.lease_expires_at.is_some_and(|at| at <= now_millis()));
    let back = store
        .claim("w-home2", LONG_LEASE)
        .await
        .expect("claim")
        .expect("the lapsed task, at home");
    assert_eq!(back.task_id, stolen.task_id);
    let running = store.running_attempts().await.expect("running attempts");
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(running.iter().all(|r| !r.on_peer), "{running:?}");
    assert!(
        running
            .iter()
            .all(|r| r.lease_expires_at.is_some_and(|at| at > now_millis())),
        "{running:?}"
    );
}

#[macro_export]
macro_rules! job_store_suite {
    ($factory:path) => {
        $crate::job_store_suite!(@borrowed $factory;
            create_get_list, idempotency, playable_while_running, idempotency_per_owner, fair_claims_across_owners,
            claim_order, claim_empty, lease_expiry_takeover,
            lease_expiry_exhausts_attempts, fail_with_retry, fail_without_retry, cancel, release,
            counts, worker_registry, away_tasks_ride_the_heartbeat, tokens_and_owners, revocations, task_graph,
            failed_task_fails_the_job, lost_lease_reruns_only_that_task, cancel_stops_every_task,
            job_events, invalid_task_lists, webhook_deliveries,
            retention_claims_and_tombstones, job_context, task_timings, peer_claims, peer_offers_and_exact_claims,
            peer_offers_take_the_longest_of_the_front, graph_grows,
            running_attempts_know_lapses_and_peers);
        $crate::job_store_suite!(@shared $factory;
            concurrent_idempotent_creates, concurrent_claims, concurrent_cancel_and_complete,
            concurrent_claims_of_one_job);
    };
    (@borrowed $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $factory().await;
                $crate::testsuite::$name(&*store).await;
            }
        )*
    };
    (@shared $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $factory().await;
                $crate::testsuite::$name(store).await;
            }
        )*
    };
}

/// Metadata is stored and filtered on (every pair must match, exactly, together with the
/// status and owner filters and paging); the input's name is kept from creation and its probe
/// facts are recorded later (or at creation) and read back exactly.
pub async fn job_context(store: &dyn JobStore) {
    use crate::JobFilter;
    use reelay_protocol::InputFacts;
    let meta = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut ids = Vec::new();
    for (i, pairs) in [
        &[("order", "A-1"), ("tenant", "acme")][..],
        &[("order", "A-2"), ("tenant", "acme")][..],
        &[("order", "A-1"), ("tenant", "globex")][..],
        &[][..],
    ]
    .into_iter()
    .enumerate()
    {
        let mut job = new_job("test");
        job.metadata = meta(pairs);
        job.input_name = Some(format!("clip {i}.mp4"));
        ids.push(create(store, job).await.id);
    }
    let filtered = |status: Option<JobStatus>, pairs: &[(&str, &str)]| JobFilter {
        status,
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let list = |owner: Option<&'static str>, f: JobFilter, limit: u32, cursor: Option<String>| async move {
        let (jobs, next) = store
            .list_jobs_filtered(owner, &f, limit, cursor.as_deref())
            .await
            .expect("list_jobs_filtered");
        (jobs.into_iter().map(|j| j.id).collect::<Vec<_>>(), next)
    };
    // Newest first, like every listing.
    let (acme, _) = list(None, filtered(None, &[("tenant", "acme")]), 10, None).await;
    assert_eq!(acme, [ids[1].clone(), ids[0].clone()]);
    let (both, _) = list(
        None,
        filtered(None, &[("tenant", "acme"), ("order", "A-1")]),
        10,
        None,
    )
    .await;
    assert_eq!(both, [ids[0].clone()], "every pair must match");
    let (a1, _) = list(None, filtered(None, &[("order", "A-1")]), 10, None).await;
    assert_eq!(a1, [ids[2].clone(), ids[0].clone()]);
    // Exact values only: no prefix, no case folding, no matching of a key by its value.
    for miss in [[("order", "A-")], [("order", "a-1")], [("A-1", "order")]] {
        let (none, _) = list(None, filtered(None, &miss), 10, None).await;
        assert!(none.is_empty(), "{miss:?} matched {none:?}");
    }
    // Paging through a filtered listing.
    let (first, next) = list(None, filtered(None, &[("tenant", "acme")]), 1, None).await;
    assert_eq!(first, [ids[1].clone()]);
    let (second, end) = list(None, filtered(None, &[("tenant", "acme")]), 1, next).await;
    assert_eq!(second, [ids[0].clone()]);
    assert_eq!(end, None);
    // Combined with the status and owner filters.
    store.cancel(&ids[0]).await.expect("cancel");
    let (queued, _) = list(
        None,
        filtered(Some(JobStatus::Queued), &[("tenant", "acme")]),
        10,
        None,
    )
    .await;
    assert_eq!(queued, [ids[1].clone()]);
    let (cancelled, _) = list(
        Some("tester"),
        filtered(Some(JobStatus::Cancelled), &[("tenant", "acme")]),
        10,
        None,
    )
    .await;
    assert_eq!(cancelled, [ids[0].clone()]);
    let (others, _) = list(
        Some("someone-else"),
        filtered(None, &[("tenant", "acme")]),
        10,
        None,
    )
    .await;
    assert!(others.is_empty());

    // The name is there from the start, the facts once recorded.
    let job = get(store, &ids[1]).await;
    assert_eq!(job.input_name.as_deref(), Some("clip 1.mp4"));
    assert_eq!(job.input_facts, None);
    let facts = InputFacts {
        size: Some(123_456),
        duration_seconds: Some(2.5),
        width: Some(1080),
        height: Some(1920),
        video_codec: Some("h264".into()),
        // JSON escapes a NUL, so even Postgres keeps it.
        audio_codec: Some("aac\0x".into()),
    };
    assert!(store.set_input_facts(&ids[1], &facts).await.expect("set"));
    let job = get(store, &ids[1]).await;
    let stored = job.input_facts.expect("facts recorded");
    assert_eq!(stored.size, Some(123_456));
    assert_eq!(stored.width, Some(1080));
    assert_eq!(stored.duration_seconds, Some(2.5));
    assert_eq!(stored, facts);
    // Listing reads them too.
    let (jobs, _) = store
        .list_jobs_filtered(None, &filtered(None, &[("order", "A-2")]), 10, None)
        .await
        .expect("list");
    assert_eq!(
        jobs[0].input_facts.as_ref().and_then(|f| f.height),
        Some(1920)
    );
    assert!(!store
        .set_input_facts("test.0000000000000NOSUCHJOB0", &facts)
        .await
        .expect("set"));

    // Facts known at submission are stored with the job.
    let mut probed = new_job("test");
    probed.input_facts = Some(facts.clone());
    let job = create(store, probed).await;
    assert_eq!(
        job.input_facts.and_then(|f| f.video_codec).as_deref(),
        Some("h264")
    );
}
