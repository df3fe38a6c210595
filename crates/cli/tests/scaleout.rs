//! Scale-out inside one cloud, with real processes: 2 `reelay api` + 3 `reelay worker` replicas
//! on one Postgres and one S3-compatible server (s3s-fs), while replicas are killed, stalled,
//! drained and the database restarts. Every job must end `succeeded` exactly once.

use reelay_jobs::testsuite::PrivateCluster;
use reelay_protocol::{JobList, JobStatus, JobView, LoadReport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use common::{free_port, get_ok, try_get_json as get, Guard, Server, Stop, BIN};

const KEY: &str = "scaleoutkey";
const SECRET: &str = "scaleoutsecret12345";

struct Env {
    db: String,
    s3_endpoint: String,
    dir: PathBuf,
}

impl Env {
    fn spawn(&self, role: &str, name: &str, extra: &[&str]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args([
            role,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster",
            "aws",
        ])
        .arg("--data-dir")
        .arg(self.dir.join(name))
        .args([
            "--database-url",
            &self.db,
            "--storage",
            "s3://media/reelay",
            "--lease-seconds",
            "2",
        ])
        .args(extra)
        .env("AWS_ENDPOINT", &self.s3_endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("RUST_LOG", "warn");
        Server::spawn(cmd, port)
    }
}

fn clip(dir: &Path, name: &str, secs: u32) -> PathBuf {
    common::clip(dir, name, "160x120", secs, false)
}

fn submit(api: &str, file: &Path, preset: &str) -> String {
    let form = reqwest::blocking::multipart::Form::new()
        .text(
            "spec",
            format!(r#"{{"outputs":[{{"preset":"{preset}"}}]}}"#),
        )
        .file("file", file)
        .unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("{api}/v1/jobs"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<JobView>().unwrap().id
}

/// Polls `pred` until it holds.
fn wait_until(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    common::wait_until(what, timeout, || pred().then_some(()));
}

#[test]
fn replicas_die_stall_drain_and_the_database_restarts_yet_every_job_succeeds_once() {
    let tmp = tempfile::tempdir().unwrap();
    let pg =
        PrivateCluster::start_new().expect("a Postgres cluster (make test installs postgresql)");
    let s3_port = free_port();
    std::fs::create_dir_all(tmp.path().join("s3/media")).unwrap();
    let s3 = Command::new(std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".into()))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &s3_port.to_string(),
            "--access-key",
            KEY,
            "--secret-key",
            SECRET,
        ])
        .arg(tmp.path().join("s3"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs (make test installs it)");
    // Killed and reaped on every exit path, including a failed assertion.
    let _s3 = Guard::new(s3, Stop::Kill);
    let env = Env {
        db: pg.url(),
        s3_endpoint: format!("http://127.0.0.1:{s3_port}"),
        dir: tmp.path().to_path_buf(),
    };
    wait_until("s3s-fs", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", s3_port)).is_ok()
    });

    let short = clip(tmp.path(), "short.mp4", 1);
    let long = clip(tmp.path(), "long.mp4", 20);
    let api1 = env.spawn("api", "api1", &[]);
    let api2 = env.spawn("api", "api2", &[]);
    let mut workers: Vec<Server> = (0..3)
        .map(|i| {
            env.spawn(
                "worker",
                &format!("w{i}"),
                &["--workers", "1", "--shutdown-grace-seconds", "60"],
            )
        })
        .collect();
    // Workers serve only health and metrics.
    assert_eq!(
        reqwest::blocking::get(format!("{}/v1/jobs", workers[0].base()))
            .unwrap()
            .status(),
        404
    );
    assert!(get_ok(&format!("{}/metrics", workers[0].base())));

    // 30 jobs through both api replicas: long VP9 ones first so every worker is busy mid-encode.
    let mut ids = vec![];
    for i in 0..30 {
        let api = if i % 2 == 0 { api1.base() } else { api2.base() };
        let (file, preset) = if i < 6 {
            (&long, "webm-vp9-720p")
        } else {
            (&short, "mp4-360p")
        };
        ids.push(submit(&api, file, preset));
    }
    // Any api replica answers for any job, and /v1/load sees the shared queue and capacity.
    assert_eq!(
        get::<JobView>(&format!("{}/v1/jobs/{}", api2.base(), ids[0]))
            .unwrap()
            .id,
        ids[0]
    );
    wait_until("3 workers busy", Duration::from_secs(30), || {
        get::<LoadReport>(&format!("{}/v1/load", api1.base()))
            .is_some_and(|l| l.running == 3 && l.capacity == 3)
    });

    // 1. kill -9 a worker mid-encode, and kill an api replica.
    workers[0].child.kill().unwrap();
    workers[0].child.wait().unwrap();
    drop(api2);
    // 2. Stall another worker past its lease; its job must be taken over by someone else.
    workers[1].signal("-STOP");
    std::thread::sleep(Duration::from_secs(4));
    let extra = env.spawn("worker", "w3", &["--workers", "1"]);
    workers[1].signal("-CONT");
    // 3. Restart Postgres mid-run.
    pg.stop().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    pg.start().unwrap();
    // 4. Drain a worker with SIGTERM: it finishes or hands back what it holds, and exits cleanly.
    workers[2].signal("-TERM");
    let status = workers[2].child.wait().unwrap();
    assert!(status.success(), "drained worker exits 0: {status:?}");
    drop(workers.remove(2));

    let api = api1.base();
    wait_until("every job terminal", Duration::from_secs(240), || {
        ids.iter().all(|id| {
            get::<JobView>(&format!("{api}/v1/jobs/{id}")).is_some_and(|j| j.status.is_terminal())
        })
    });
    let mut by_attempts: HashMap<u32, usize> = HashMap::new();
    for id in &ids {
        let j: JobView = get(&format!("{api}/v1/jobs/{id}")).unwrap();
        assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
        *by_attempts.entry(j.attempts).or_default() += 1;
        // The outputs the job points at are the completed attempt's, and they are whole.
        let out = &j.outputs[0];
        let bytes = reqwest::blocking::get(format!("{api}{}", out.url))
            .unwrap()
            .bytes()
            .unwrap();
        assert_eq!(bytes.len() as u64, out.size, "{id}");
        let stored = tmp
            .path()
            .join("s3/media/reelay/outputs")
            .join(id)
            .join(format!("a{}", j.attempts))
            .join(&out.name);
        assert!(stored.is_file(), "{} missing", stored.display());
    }
    assert!(
        by_attempts.keys().any(|a| *a >= 2),
        "the killed/stalled workers' jobs were retried: {by_attempts:?}"
    );
    let list: JobList = get(&format!("{api}/v1/jobs?limit=100")).unwrap();
    assert_eq!(list.jobs.len(), 30, "no job duplicated or lost");
    let load: LoadReport = get(&format!("{api}/v1/load")).unwrap();
    assert_eq!((load.running, load.queued), (0, 0), "nothing stuck running");
    drop(extra);
}
