//! Claim latency and throughput with a deep queue, on a throwaway Postgres cluster (or
//! `REELAY_BENCH_DATABASE_URL`) and on SQLite. Run through `bench/claims.sh`.
//!
//! For each back end and queue depth: fill the queue, then 4 concurrent claimers each claim and
//! immediately complete jobs; report p50/p99 claim latency and claims per second.

use reelay_jobs::testsuite::{new_job, PrivateCluster};
use reelay_jobs::{JobStore, PgStore, SqliteStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLAIMERS: usize = 4;
const CLAIMS: usize = 2000;

async fn fill(store: &Arc<dyn JobStore>, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for part in 0..8 {
        let store = store.clone();
        set.spawn(async move {
            for _ in (part..n).step_by(8) {
                store.create_job(new_job("bench")).await.expect("create");
            }
        });
    }
    while set.join_next().await.is_some() {}
}

async fn measure(store: Arc<dyn JobStore>) -> (f64, f64, f64) {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..CLAIMERS {
        let store = store.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(CLAIMS / CLAIMERS);
            let worker = format!("bench-{c}");
            for _ in 0..CLAIMS / CLAIMERS {
                let t = Instant::now();
                let claim = store
                    .claim(&worker, Duration::from_secs(60))
                    .await
                    .expect("claim")
                    .expect("queue ran dry");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                store
                    .complete(&claim.task_id, &worker, claim.attempt, vec![])
                    .await
                    .expect("complete");
            }
            lat
        });
    }
    let mut all = vec![];
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("claimer"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (pct(0.50), pct(0.99), all.len() as f64 / secs)
}

#[tokio::main]
async fn main() {
    let depths: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let depths = if depths.is_empty() {
        vec![10_000, 100_000]
    } else {
        depths
    };
    let cluster = match std::env::var("REELAY_BENCH_DATABASE_URL") {
        Ok(_) => None,
        Err(_) => Some(PrivateCluster::start_new().expect("postgres")),
    };
    let base_url = std::env::var("REELAY_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| cluster.as_ref().map(|c| c.url()).unwrap_or_default());
    let admin = PgStore::connect(&base_url).await.expect("connect");
    drop(admin);
    let mut results: Vec<(String, usize, (f64, f64, f64))> = vec![];
    for (i, &depth) in depths.iter().enumerate() {
        // A fresh database per depth, created through a plain connection.
        let db = format!("claimbench_{i}_{}", std::process::id());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base_url)
            .await
            .expect("admin connect");
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut conn)
            .await
            .expect("create db");
        let url = match base_url.rsplit_once('/') {
            Some((head, _)) => format!("{head}/{db}"),
            None => base_url.clone(),
        };
        let pg: Arc<dyn JobStore> = Arc::new(PgStore::connect(&url).await.expect("pg"));
        let t = Instant::now();
        fill(&pg, depth).await;
        eprintln!(
            "postgres: queued {depth} jobs in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        results.push(("postgres".into(), depth, measure(pg).await));

        let dir = tempfile::tempdir().expect("tmp");
        let lite: Arc<dyn JobStore> = Arc::new(
            SqliteStore::open(&dir.path().join("b.db"))
                .await
                .expect("sqlite"),
        );
        let t = Instant::now();
        fill(&lite, depth).await;
        eprintln!(
            "sqlite: queued {depth} jobs in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        results.push(("sqlite".into(), depth, measure(lite).await));
    }
    println!("backend   queued   p50_ms   p99_ms   claims_per_s   ({CLAIMERS} claimers, {CLAIMS} claims, each followed by complete)");
    for (b, d, (p50, p99, rate)) in &results {
        println!("{b:<9} {d:>7} {p50:>8.2} {p99:>8.2} {rate:>12.0}");
    }
    for b in ["postgres", "sqlite"] {
        let rows: Vec<_> = results.iter().filter(|r| r.0 == b).collect();
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            if first.1 != last.1 {
                println!(
                    "{b}: {}k vs {}k queued: p50 ratio {:.2}, p99 ratio {:.2}, throughput ratio {:.2} (target: within 1.5x)",
                    last.1 / 1000, first.1 / 1000, last.2 .0 / first.2 .0, last.2 .1 / first.2 .1, first.2 .2 / last.2 .2
                );
            }
        }
    }
}
