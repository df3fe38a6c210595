//! A `reelay worker` in its own process starts a new job at once, not after its poll interval:
//! the api's insert sends a Postgres `NOTIFY` and the worker `LISTEN`s (issue 18). Real
//! processes (one `reelay api`, one `reelay worker`) on a real Postgres, with the poll interval
//! made so long (40 s between idle claims) that only the notification can explain a quick start.

use reelay_jobs::testsuite::PrivateCluster;
use reelay_protocol::{JobStatus, JobView};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{clip, free_port, http, wait_until, Server, BIN};

/// `poll_interval_ms` of both processes: an idle slot claims again after 4 × this, 40 s.
const POLL_MS: u64 = 10_000;

fn role(role: &str, data: &Path, config: &Path, db: &str) -> Server {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([role, "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(["--database-url", db, "--workers", "1"])
        .env("RUST_LOG", "warn");
    Server::spawn(cmd, port)
}

fn submit(api: &str, file: &Path) -> String {
    let form = reqwest::blocking::multipart::Form::new()
        .text("spec", r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
        .file("file", file)
        .unwrap();
    let r = http()
        .post(format!("{api}/v1/jobs"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    r.json::<JobView>().unwrap().id
}

#[test]
fn a_worker_process_starts_a_new_job_long_before_its_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let pg =
        PrivateCluster::start_new().expect("a Postgres cluster (make test installs postgresql)");
    let config = dir.path().join("reelay.toml");
    std::fs::write(&config, format!("poll_interval_ms = {POLL_MS}\n")).unwrap();
    // One data directory: the api spools and stores the upload, the worker reads it there.
    let data = dir.path().join("data");
    let input = clip(dir.path(), "small.mp4", "160x120", 1, true);
    let api = role("api", &data, &config, &pg.url());
    let _worker = role("worker", &data, &config, &pg.url());
    // The worker's one slot has made its first claim (nothing there) and sleeps for 40 s; its
    // listening connection is opened beside it, so give that a moment.
    std::thread::sleep(Duration::from_secs(2));

    for n in 0..2 {
        let sent = Instant::now();
        let id = submit(&api.base, &input);
        let job = wait_until("the job to succeed", Duration::from_secs(30), || {
            http()
                .get(format!("{}/v1/jobs/{id}", api.base))
                .send()
                .ok()?
                .json::<JobView>()
                .ok()
                .filter(|j| j.status.is_terminal())
        });
        let took = sent.elapsed();
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        // A 1 s 160x120 encode takes well under a second; a polled claim would come after
        // up to 40 s (the second job: after the slot went back to sleep behind the first).
        assert!(
            took < Duration::from_secs(8),
            "job {n} took {took:?} from submission to success: the worker waited for its poll"
        );
    }
}
