//! The multi-cloud edge end to end: real clusters (`reelay serve`), a real `reelay edge` and the
//! nginx it supervises, all on loopback.
//!
//! Most jobs here take their input from a URL served by a "stall" server that accepts the
//! connection and never answers: the job then holds a worker slot (running) or waits (queued)
//! without using any CPU, which makes load exactly controllable on a 2-core machine. Only the
//! routing test encodes a real (one-second, 160x120) clip.

use reelay_edge::health::Health;
use reelay_edge::EdgeStatus;
use reelay_protocol::{ErrorBody, JobList, JobStatus, JobView};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_reelay");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .build()
        .unwrap()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        })
        .unwrap_or(false)
}

/// Accepts connections and never answers: a job fetching from it stays "running" for as long
/// as the test needs, using no CPU.
fn stall_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/clip.mp4", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    url
}

struct Cluster {
    name: String,
    ip: String,
    port: u16,
    data: PathBuf,
    workers: u32,
    /// `--shutdown-grace-seconds`: how long a SIGTERMed cluster drains.
    grace: u32,
    /// A `--config` file, for settings that have no flag.
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl Cluster {
    fn start(dir: &Path, name: &str, ip: &str, workers: u32) -> Cluster {
        Self::start_with_grace(dir, name, ip, workers, 1)
    }

    fn start_with_grace(dir: &Path, name: &str, ip: &str, workers: u32, grace: u32) -> Cluster {
        Self::start_with(dir, name, ip, workers, grace, None)
    }

    /// With `toml` as its configuration file (settings that have no flag).
    fn start_with_config(dir: &Path, name: &str, ip: &str, workers: u32, toml: &str) -> Cluster {
        let path = dir.join(format!("{name}-{ip}.toml"));
        std::fs::write(&path, toml).unwrap();
        Self::start_with(dir, name, ip, workers, 1, Some(path))
    }

    fn start_with(
        dir: &Path,
        name: &str,
        ip: &str,
        workers: u32,
        grace: u32,
        config: Option<PathBuf>,
    ) -> Cluster {
        let mut c = Cluster {
            name: name.to_string(),
            ip: ip.to_string(),
            port: free_port(),
            data: dir.join(format!("{name}-{ip}")),
            workers,
            grace,
            config,
            child: None,
        };
        c.restart();
        c
    }

    fn base(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// Starts (again) on the same address and data dir.
    fn restart(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &format!("{}:{}", self.ip, self.port)]);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--cluster", &self.name])
            .args(["--workers", &self.workers.to_string()])
            .args(["--lease-seconds", "2"])
            .args(["--shutdown-grace-seconds", &self.grace.to_string()])
            .arg("--allow-private-urls")
            // These tests are about placement and routing: anonymous clients through the edge,
            // which a loopback cluster refuses unless told (finding 2 of issue 12).
            .arg("--allow-anonymous")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = http();
        let url = format!("{}/readyz", self.base());
        wait_until(
            &format!("cluster {} ready", self.name),
            Duration::from_secs(30),
            || client.get(&url).send().ok().filter(|r| r.status() == 200),
        );
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn submit_direct(&self, input_url: &str) -> String {
        let r = http()
            .post(format!("{}/v1/jobs", self.base()))
            .json(&job_spec(input_url))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
        r.json::<JobView>().unwrap().id
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            kill(c.id(), "-CONT");
        }
        self.kill9();
    }
}

fn job_spec(input_url: &str) -> serde_json::Value {
    serde_json::json!({"input": {"url": input_url}, "outputs": [{"preset": "mp4-360p"}]})
}

struct Edge {
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    control: u16,
    child: Option<Child>,
}

impl Edge {
    /// Writes edge.toml (clusters as `(name, url, weight)`, `extra` appended to the top-level
    /// settings) and starts `reelay edge`; returns once nginx serves and every cluster is up.
    fn start(dir: &Path, clusters: &[(&str, String, u32)], extra: &str) -> Edge {
        let dir = dir.join("edge");
        std::fs::create_dir_all(&dir).unwrap();
        let mut edge = Edge {
            config: dir.join("edge.toml"),
            dir,
            port: free_port(),
            control: free_port(),
            child: None,
        };
        std::fs::write(&edge.config, edge.toml(clusters, extra)).unwrap();
        edge.restart();
        edge
    }

    fn toml(&self, clusters: &[(&str, String, u32)], extra: &str) -> String {
        let mut t = format!(
            "listen = \"127.0.0.1:{}\"\ncontrol_listen = \"127.0.0.1:{}\"\nwork_dir = \"{}\"\nreload_min_interval_ms = 200\n{extra}\n\n[health]\ninterval_ms = 500\ntimeout_ms = 1500\nfall = 2\nrise = 2\nresolve_interval_ms = 500\n",
            self.port,
            self.control,
            self.dir.join("work").display()
        );
        for (name, url, weight) in clusters {
            t.push_str(&format!(
                "\n[[clusters]]\nname = \"{name}\"\nurl = \"{url}\"\nweight = {weight}\n"
            ));
        }
        t
    }

    fn restart(&mut self) {
        let child = Command::new(BIN)
            .arg("edge")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(
            "the edge to serve with every cluster up",
            Duration::from_secs(30),
            || {
                let s: EdgeStatus = http()
                    .get(format!("{}/edge/status", self.base()))
                    .send()
                    .ok()?
                    .json()
                    .ok()?;
                s.clusters
                    .iter()
                    .all(|c| c.health == Health::Up)
                    .then_some(())
            },
        );
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn control(&self) -> String {
        format!("http://127.0.0.1:{}", self.control)
    }

    /// Replaces edge.toml with `text` and asks the controller to apply it now.
    fn reconfigure(&self, text: &str) -> reqwest::blocking::Response {
        std::fs::write(&self.config, text).unwrap();
        http()
            .post(format!("{}/edge/reload", self.control()))
            .send()
            .unwrap()
    }

    fn status(&self) -> EdgeStatus {
        http()
            .get(format!("{}/edge/status", self.control()))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn nginx_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("work/nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("work/logs/access.log")).unwrap_or_default()
    }

    fn submit(
        &self,
        client: &reqwest::blocking::Client,
        input_url: &str,
    ) -> Result<String, String> {
        let r = client
            .post(format!("{}/v1/jobs", self.base()))
            .json(&job_spec(input_url))
            .send()
            .map_err(|e| format!("transport: {e}"))?;
        let status = r.status();
        let body = r.text().unwrap_or_default();
        if status != 202 {
            return Err(format!("{status}: {body}"));
        }
        serde_json::from_str::<JobView>(&body)
            .map(|j| j.id)
            .map_err(|e| format!("{e}: {body}"))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(c.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // An edge killed with SIGKILL leaves nginx running by design.
        if let Some(pid) = self.nginx_pid() {
            if pid_alive(pid) {
                kill(pid, "-TERM");
            }
        }
    }
}

fn counts(ids: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id.split('.').next().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

fn get_json_error(
    client: &reqwest::blocking::Client,
    url: &str,
) -> (u16, Option<String>, ErrorBody) {
    let r = client.get(url).send().unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        r.headers().get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{url}"
    );
    let body: ErrorBody = r.json().unwrap();
    (status, retry, body)
}

#[test]
fn placement_follows_free_capacity_and_avoids_deep_queues() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 3);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 3), ("gcp", gcp.base(), 1)],
        "",
    );
    let client = http();

    // A burst: 8 jobs into 3 + 1 free slots lands about 6:2.
    let burst: Vec<String> = (0..8)
        .map(|_| edge.submit(&client, &stall).unwrap())
        .collect();
    let c = counts(&burst);
    eprintln!("burst placement: {c:?}");
    assert!((5..=7).contains(&c["aws"]), "{c:?}");
    assert!((1..=3).contains(&c["gcp"]), "{c:?}");

    // A deep queue on aws (submitted behind the edge's back)...
    for _ in 0..24 {
        aws.submit_direct(&stall);
    }
    wait_until(
        "the edge to see aws's queue",
        Duration::from_secs(10),
        || {
            let s = edge.status();
            let a = s.clusters.iter().find(|c| c.name == "aws")?;
            (a.load.as_ref()?.queued >= 24 && a.pending_placements == 0).then_some(())
        },
    );
    // ...sends most of the next burst to gcp, although gcp is smaller and busy too.
    let second: Vec<String> = (0..6)
        .map(|_| edge.submit(&client, &stall).unwrap())
        .collect();
    let c2 = counts(&second);
    eprintln!("placement with a deep queue on aws: {c2:?}");
    // 4 to 6 of 6, depending on whether a load reading lands mid-burst (see placement.rs).
    assert!(c2.get("gcp").copied().unwrap_or(0) >= 4, "{c2:?}");
    let s = edge.status();
    let placed: u64 = s.clusters.iter().map(|c| c.placements).sum();
    assert_eq!(placed, 14, "every submission was placed by the controller");
    eprintln!("placement test took {:?}", t0.elapsed());
}

/// When a submission was sent, and the job id or the failure.
type Submission = (Instant, Result<String, String>);

#[test]
fn failover_under_load_loses_no_accepted_job() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let mut aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "local_cluster = \"aws\"",
    );
    let base = edge.base();

    // 10 submissions a second for 8 s; aws is killed 2 s in.
    let results: Arc<Mutex<Vec<Submission>>> = Arc::default();
    let sender = {
        let results = results.clone();
        let stall = stall.clone();
        let edge_base = base.clone();
        std::thread::spawn(move || {
            let client = http();
            let start = Instant::now();
            for i in 0..80u32 {
                let due = start + Duration::from_millis(100) * i;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let at = Instant::now();
                let r = client
                    .post(format!("{edge_base}/v1/jobs"))
                    .json(&job_spec(&stall))
                    .send();
                let outcome = match r {
                    Ok(r) if r.status() == 202 => Ok(r.json::<JobView>().unwrap().id),
                    Ok(r) => Err(format!("{}: {}", r.status(), r.text().unwrap_or_default())),
                    Err(e) => Err(format!("transport: {e}")),
                };
                results.lock().unwrap().push((at, outcome));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = Instant::now();
    aws.kill9();
    sender.join().unwrap();

    let results = results.lock().unwrap().clone();
    let accepted: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    let failures: Vec<&Submission> = results.iter().filter(|(_, r)| r.is_err()).collect();
    eprintln!(
        "failover: {} accepted {:?}, {} failed: {:?}",
        accepted.len(),
        counts(&accepted),
        failures.len(),
        failures.iter().map(|(_, r)| r).collect::<Vec<_>>()
    );
    // Only a request in flight at the kill may fail.
    assert!(failures.len() <= 2, "{failures:?}");
    let detection = Duration::from_millis(2 * 500 + 1500);
    for (at, r) in &results {
        if *at > killed_at + detection {
            let id = r
                .as_ref()
                .unwrap_or_else(|e| panic!("failed after failover: {e}"));
            assert!(id.starts_with("gcp."), "{id} placed on the dead cluster");
        }
    }
    let on_aws: Vec<&String> = accepted.iter().filter(|i| i.starts_with("aws.")).collect();
    let on_gcp: Vec<&String> = accepted.iter().filter(|i| i.starts_with("gcp.")).collect();
    assert!(
        !on_aws.is_empty() && on_gcp.len() > 40,
        "aws {} gcp {}",
        on_aws.len(),
        on_gcp.len()
    );

    // The dead cluster's jobs: 503 JSON with Retry-After, not a hang, not an HTML page.
    let client = http();
    for id in &on_aws {
        let (status, retry, body) = get_json_error(&client, &format!("{base}/v1/jobs/{id}"));
        assert_eq!(status, 503, "{body:?}");
        assert!(retry.is_some());
        assert_eq!(body.error.code, "cluster_unavailable");
    }
    for id in &on_gcp {
        let r = client.get(format!("{base}/v1/jobs/{id}")).send().unwrap();
        assert_eq!(r.status(), 200);
    }

    // Back on the same port and data: its jobs are served again, none lost.
    aws.restart();
    wait_until(
        "aws's jobs to be reachable again",
        Duration::from_secs(15),
        || {
            let r = client
                .get(format!("{base}/v1/jobs/{}", on_aws[0]))
                .send()
                .ok()?;
            (r.status() == 200).then_some(())
        },
    );
    for id in accepted.iter() {
        let j: JobView = client
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(&j.id, id);
        assert!(
            matches!(j.status, JobStatus::Queued | JobStatus::Running),
            "{j:?}"
        );
    }
    eprintln!("failover test took {:?}", t0.elapsed());
}

#[test]
fn a_hung_cluster_is_marked_down_in_time_and_comes_back() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let (interval, timeout, fall) = (500u64, 1000u64, 2u64);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "",
    );
    // Tighter than the other tests: a stopped process never answers, so the timeout decides.
    let text = std::fs::read_to_string(&edge.config)
        .unwrap()
        .replace("timeout_ms = 1500", &format!("timeout_ms = {timeout}"));
    let r = edge.reconfigure(&text);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let gcp_job = gcp.submit_direct(&stall);

    kill(gcp.pid(), "-STOP");
    let stopped = Instant::now();
    wait_until("gcp to be marked down", Duration::from_secs(10), || {
        let s = edge.status();
        (s.clusters.iter().find(|c| c.name == "gcp")?.health == Health::Down).then_some(())
    });
    let took = stopped.elapsed();
    let bound = Duration::from_millis(fall * interval + timeout + 1000);
    eprintln!("hung cluster marked down after {took:?} (bound {bound:?})");
    assert!(took <= bound, "{took:?} > {bound:?}");

    // New work goes to aws at once, and nothing waits on the hung cluster.
    let client = http();
    for _ in 0..5 {
        let t = Instant::now();
        let id = edge.submit(&client, &stall).unwrap();
        assert!(id.starts_with("aws."), "{id}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    wait_until("gcp's jobs to answer 503", Duration::from_secs(5), || {
        let r = http()
            .get(format!("{}/v1/jobs/{gcp_job}", edge.base()))
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?;
        (r.status() == 503).then_some(())
    });

    kill(gcp.pid(), "-CONT");
    wait_until("gcp to come back", Duration::from_secs(20), || {
        let s = edge.status();
        (s.clusters.iter().find(|c| c.name == "gcp")?.health == Health::Up).then_some(())
    });
    wait_until(
        "gcp's jobs to be served again",
        Duration::from_secs(5),
        || {
            let r = client
                .get(format!("{}/v1/jobs/{gcp_job}", edge.base()))
                .send()
                .ok()?;
            (r.status() == 200).then_some(())
        },
    );
    eprintln!("hung-cluster test took {:?}", t0.elapsed());
}

#[test]
fn submissions_survive_the_controller_dying() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let mut edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "",
    );
    let nginx = edge.nginx_pid().unwrap();
    edge.kill9();
    assert!(pid_alive(nginx), "nginx outlives its controller");

    let client = http();
    let ids: Vec<String> = (0..6)
        .map(|_| {
            edge.submit(&client, &stall)
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let c = counts(&ids);
    eprintln!("through the fallback: {c:?}");
    assert_eq!(c.values().sum::<usize>(), 6);
    // nginx writes the log line just after the answer: give it a moment.
    wait_until(
        "6 fallback lines in the access log",
        Duration::from_secs(3),
        || {
            let log = edge.access_log();
            (log.lines()
                .filter(|l| l.contains("\"placed_on\":\"fallback\""))
                .count()
                >= 6)
                .then_some(())
        },
    );
    // Reads keep working too (they never needed the controller).
    let r = client
        .get(format!("{}/v1/jobs/{}", edge.base(), ids[0]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // A new controller takes over the running nginx instead of starting a second one.
    edge.restart();
    let s = edge.status();
    assert_eq!(s.nginx.pid, Some(nginx));
    assert!(s.nginx.adopted);
    edge.submit(&client, &stall).unwrap();
    let placed: u64 = edge.status().clusters.iter().map(|c| c.placements).sum();
    assert_eq!(placed, 1, "placed by the new controller");
    drop(edge);
    assert!(
        !pid_alive(nginx),
        "stopping the edge stops the adopted nginx"
    );
    eprintln!("controller-death test took {:?}", t0.elapsed());
}

#[test]
fn a_cluster_name_that_moves_is_followed_without_restarts() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    // Two incarnations of "aws" on the same port, on two loopback addresses.
    let old = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let mut new = Cluster {
        name: "aws".into(),
        ip: "127.0.0.2".into(),
        port: old.port,
        data: dir.path().join("aws-new"),
        workers: 1,
        grace: 1,
        config: None,
        child: None,
    };
    new.restart();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 aws.reelay.test\n").unwrap();
    let edge = Edge::start(
        dir.path(),
        &[("aws", format!("http://aws.reelay.test:{}", old.port), 1)],
        &format!("hosts_file = \"{}\"", hosts.display()),
    );
    let client = http();
    let first = edge.submit(&client, &stall).unwrap();
    assert_eq!(
        client
            .get(format!("{}/v1/jobs/{first}", old.base()))
            .send()
            .unwrap()
            .status(),
        200
    );
    let generation = edge.status().generation;

    std::fs::write(&hosts, "# moved\n127.0.0.2 aws.reelay.test\n").unwrap();
    wait_until(
        "the edge to follow the new address",
        Duration::from_secs(10),
        || {
            let s = edge.status();
            (s.clusters[0].addresses == vec![format!("127.0.0.2:{}", old.port)]
                && s.generation > generation
                && s.last_reload.as_ref()?.ok)
                .then_some(())
        },
    );
    let second = edge.submit(&client, &stall).unwrap();
    assert_eq!(
        client
            .get(format!("{}/v1/jobs/{second}", new.base()))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{}/v1/jobs/{second}", old.base()))
            .send()
            .unwrap()
            .status(),
        404
    );
    eprintln!("address-change test took {:?}", t0.elapsed());
}

#[test]
fn a_bad_configuration_is_refused_and_the_old_one_keeps_serving() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let clusters = [("aws", aws.base(), 1)];
    let edge = Edge::start(dir.path(), &clusters, "");
    let client = http();
    let presets = || {
        client
            .get(format!("{}/v1/presets", edge.base()))
            .send()
            .unwrap()
            .status()
    };
    let good = edge.toml(&clusters, "");
    let before = edge.status();
    let live_conf = std::fs::read_to_string(edge.dir.join("work/nginx.conf")).unwrap();

    // Invalid TOML value: refused before anything is rendered.
    let r = edge.reconfigure(&good.replace(
        "reload_min_interval_ms",
        "client_max_body_size = \"lots\"\nreload_min_interval_ms",
    ));
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<ErrorBody>().unwrap().error.code, "invalid_config");
    let s = edge.status();
    assert!(
        s.config_error
            .as_deref()
            .unwrap_or("")
            .contains("client_max_body_size"),
        "{s:?}"
    );
    assert_eq!(s.generation, before.generation);
    assert_eq!(presets(), 200);

    // Valid TOML, but nginx -t rejects the rendered file: the live file and process stay.
    let r = edge.reconfigure(&good.replace(
        "reload_min_interval_ms",
        "nginx_http_snippet = \"this_is_not_a_directive on;\"\nreload_min_interval_ms",
    ));
    assert_eq!(r.status(), 422);
    let err = r.json::<ErrorBody>().unwrap().error;
    assert_eq!(err.code, "reload_failed");
    assert!(err.message.contains("unknown directive"), "{}", err.message);
    let s = edge.status();
    assert_eq!(s.generation, before.generation);
    assert_eq!(s.failed_reloads, before.failed_reloads + 1);
    assert!(!s.last_reload.as_ref().unwrap().ok);
    assert_eq!(
        std::fs::read_to_string(edge.dir.join("work/nginx.conf")).unwrap(),
        live_conf
    );
    assert_eq!(s.nginx.pid, before.nginx.pid);
    assert_eq!(presets(), 200);

    // A good file through SIGHUP applies (and a 1 MiB limit now answers 413 in JSON).
    std::fs::write(
        &edge.config,
        good.replace(
            "reload_min_interval_ms",
            "client_max_body_size = \"1m\"\nreload_min_interval_ms",
        ),
    )
    .unwrap();
    kill(edge.child.as_ref().unwrap().id(), "-HUP");
    wait_until("the good file to apply", Duration::from_secs(10), || {
        let s = edge.status();
        (s.generation > before.generation && s.config_error.is_none()).then_some(())
    });
    let r = client
        .post(format!("{}/v1/jobs", edge.base()))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<ErrorBody>().unwrap().error.code, "too_large");
    eprintln!("bad-config test took {:?}", t0.elapsed());
}

#[test]
fn reloads_under_load_drop_no_request() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let url = format!("{}/v1/presets", edge.base());
            std::thread::spawn(move || {
                let client = http();
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).send() {
                        Ok(r) if r.status() == 200 => match r.bytes() {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(format!("body: {e:?}")),
                        },
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let before = edge.status().generation;
    let control = http();
    for _ in 0..6 {
        let r = control
            .post(format!("{}/edge/reload?force=true", edge.control()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    let s = edge.status();
    eprintln!(
        "{ok} requests during {} reloads, {} failed",
        s.generation - before,
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 50, "{ok}");
    // At least the forced ones (a health change may add its own).
    assert!(s.generation >= before + 6, "{} -> {}", before, s.generation);
    let hist = http()
        .get(format!("{}/edge/metrics", edge.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        hist.contains(&format!("reelay_edge_reloads_total {}", s.reloads)),
        "{hist}"
    );
    eprintln!("reload test took {:?}", t0.elapsed());
}

#[test]
fn a_draining_cluster_gets_no_new_jobs_and_all_down_fails_open() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    // A long grace period and a running job: SIGTERM then drains instead of exiting.
    let mut aws = Cluster::start_with_grace(dir.path(), "aws", "127.0.0.1", 1, 30);
    let mut gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "local_cluster = \"aws\"",
    );
    let client = http();
    let running = aws.submit_direct(&stall);
    wait_until("the aws job to run", Duration::from_secs(10), || {
        let j: JobView = client
            .get(format!("{}/v1/jobs/{running}", aws.base()))
            .send()
            .ok()?
            .json()
            .ok()?;
        (j.status == JobStatus::Running).then_some(())
    });
    kill(aws.pid(), "-TERM");
    wait_until("aws to be seen draining", Duration::from_secs(10), || {
        let s = edge.status();
        let a = s.clusters.iter().find(|c| c.name == "aws")?;
        (a.health == Health::Up && !a.accepting).then_some(())
    });
    for _ in 0..3 {
        let id = edge.submit(&client, &stall).unwrap();
        assert!(id.starts_with("gcp."), "{id} went to the draining cluster");
    }
    let r = client
        .get(format!("{}/v1/jobs/{running}", edge.base()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "a draining cluster's jobs stay reachable");

    // Nothing left: the edge fails open, says so, and answers JSON rather than a 500.
    aws.kill9();
    gcp.kill9();
    wait_until("fail-open", Duration::from_secs(10), || {
        edge.status().fail_open.then_some(())
    });
    let r = client
        .post(format!("{}/v1/jobs", edge.base()))
        .json(&job_spec(&stall))
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<ErrorBody>().unwrap().error.code,
        "cluster_unavailable"
    );
    let m = client
        .get(format!("{}/edge/metrics", edge.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(m.contains("reelay_edge_fail_open 1"), "{m}");
    eprintln!("draining test took {:?}", t0.elapsed());
}

#[test]
fn benchmark_modes_balance_without_the_controller() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let clusters = [("aws", aws.base(), 3), ("gcp", gcp.base(), 1)];
    // One worker process: nginx's balancing state is per worker, and the counts below are exact.
    let edge = Edge::start(dir.path(), &clusters, "nginx_worker_processes = 1");
    let client = http();
    for (mode, jobs, want) in [
        ("round_robin", 4, [2, 2]),
        ("weighted", 8, [6, 2]),
        ("least_conn", 4, [2, 2]),
    ] {
        let text = edge.toml(
            &clusters,
            &format!("nginx_worker_processes = 1\nmode = \"{mode}\""),
        );
        let r = edge.reconfigure(&text);
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
        let ids: Vec<String> = (0..jobs)
            .map(|_| edge.submit(&client, &stall).unwrap())
            .collect();
        let c = counts(&ids);
        eprintln!("{mode}: {c:?}");
        assert_eq!(
            [
                c.get("aws").copied().unwrap_or(0),
                c.get("gcp").copied().unwrap_or(0)
            ],
            want,
            "{mode}"
        );
    }
    let s = edge.status();
    assert_eq!(s.clusters.iter().map(|c| c.placements).sum::<u64>(), 0);
    eprintln!("modes test took {:?}", t0.elapsed());
}

fn clip(dir: &Path) -> PathBuf {
    let out = dir.join("clip.mp4");
    let st = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc2=size=160x120:rate=25:duration=1")
        .args(["-f", "lavfi", "-i", "sine=duration=1"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

#[test]
fn routing_streaming_listing_and_json_errors_through_the_edge() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "",
    );
    let base = edge.base();
    let client = http();

    // The unchanged CLI, pointed at the edge: multipart upload, SSE-following --wait.
    let input = clip(dir.path());
    let out = Command::new(BIN)
        .args([
            "submit",
            input.to_str().unwrap(),
            "--preset",
            "mp4-360p",
            "--wait",
            "--json",
        ])
        .env("REELAY_SERVER", &base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: JobView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);

    // SSE through nginx: the stream of a finished job ends with its final state.
    let events = client
        .get(format!("{base}/v1/jobs/{}/events", job.id))
        .send()
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let last_data = BufReader::new(events)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with("data:"))
        .last()
        .unwrap();
    assert!(last_data.contains("succeeded"), "{last_data}");

    // Range passes through.
    let r = client
        .get(format!("{base}{}", job.outputs[0].url))
        .header("range", "bytes=10-109")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.headers()["content-range"]
        .to_str()
        .unwrap()
        .starts_with("bytes 10-109/"));
    assert_eq!(r.bytes().unwrap().len(), 100);

    // One request id, from the edge, on every answer.
    let r = client.get(format!("{base}/v1/presets")).send().unwrap();
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1);

    // The merged list: newest first across clusters, paged with the edge's cursor.
    let mut all = vec![job.id.clone()];
    for i in 0..4 {
        let c = if i % 2 == 0 { &aws } else { &gcp };
        all.push(c.submit_direct(&stall));
        std::thread::sleep(Duration::from_millis(5));
    }
    all.reverse();
    let page1: JobList = client
        .get(format!("{base}/v1/jobs?limit=3"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let cursor = page1.next_cursor.clone().expect("a second page");
    let page2: JobList = client
        .get(format!("{base}/v1/jobs?limit=3&cursor={cursor}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let listed: Vec<String> = page1
        .jobs
        .iter()
        .chain(&page2.jobs)
        .map(|j| j.id.clone())
        .collect();
    assert_eq!(listed, all, "newest first, no gaps or duplicates");
    assert_eq!(page2.next_cursor, None);
    let failed: JobList = client
        .get(format!("{base}/v1/jobs?status=succeeded"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(failed.jobs.len(), 1);
    let (status, _, body) = get_json_error(&client, &format!("{base}/v1/jobs?status=done"));
    assert_eq!((status, body.error.code.as_str()), (400, "invalid_query"));

    // JSON errors from nginx itself.
    let (status, _, body) = get_json_error(
        &client,
        &format!("{base}/v1/jobs/azure.01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    );
    assert_eq!((status, body.error.code.as_str()), (404, "unknown_cluster"));
    let (status, _, _) = get_json_error(&client, &format!("{base}/nope"));
    assert_eq!(status, 404);
    let (status, _, _) = get_json_error(&client, &format!("{base}/v1/jobs/not-a-job"));
    assert_eq!(status, 404);
    // A cluster's own errors pass through untouched.
    let (status, _, body) = get_json_error(
        &client,
        &format!("{base}/v1/jobs/aws.01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    );
    assert_eq!((status, body.error.code.as_str()), (404, "not_found"));

    // Status and metrics through nginx.
    let s: EdgeStatus = client
        .get(format!("{base}/edge/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(s.clusters.len(), 2);
    assert!(!s.fail_open);
    let m = client
        .get(format!("{base}/edge/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for needle in [
        "reelay_edge_cluster_up{cluster=\"aws\"} 1",
        "reelay_edge_placements_total{cluster=",
        "reelay_edge_reload_failures_total 0",
        "reelay_edge_reload_duration_seconds_count",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
    let log = edge.access_log();
    assert!(log.contains("\"upstream_addr\":\"127.0.0.1:"), "{log}");
    eprintln!("routing test took {:?}", t0.elapsed());
}

#[test]
fn up_starts_everything_and_leaves_nothing_behind() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (edge_port, control, aws_port, gcp_port) =
        (free_port(), free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("topology.toml"),
        format!(
            r#"state_dir = "state"
shutdown_grace_seconds = 1
[[clusters]]
name = "aws"
listen = "127.0.0.1:{aws_port}"
workers = 3
[[clusters]]
name = "gcp"
listen = "127.0.0.1:{gcp_port}"
workers = 1
[edge]
listen = "127.0.0.1:{edge_port}"
control_listen = "127.0.0.1:{control}"
work_dir = "state/edge"
[edge.health]
interval_ms = 500
timeout_ms = 1500
[[edge.clusters]]
name = "aws"
url = "http://127.0.0.1:{aws_port}"
weight = 3
[[edge.clusters]]
name = "gcp"
url = "http://127.0.0.1:{gcp_port}"
"#
        ),
    )
    .unwrap();
    let mut up = Command::new(BIN)
        .args(["up", "--topology"])
        .arg(dir.path().join("topology.toml"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "reelay is up");
    let banner: Vec<String> = lines.by_ref().take(6).map_while(Result::ok).collect();
    assert!(
        banner[0].contains(&format!("http://127.0.0.1:{edge_port}")),
        "{banner:?}"
    );

    let client = http();
    // Protected by default: nothing anonymous gets through the edge, nor to a cluster directly;
    // the admin token it wrote (owner-only) does.
    let token_path = dir.path().join("state/admin.token");
    assert!(
        banner
            .iter()
            .any(|l| l.contains(token_path.to_str().unwrap())),
        "{banner:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token is {mode:o}");
    let admin = std::fs::read_to_string(&token_path).unwrap();
    for base in [edge_port, aws_port, gcp_port] {
        let url = format!("http://127.0.0.1:{base}/v1/presets");
        assert_eq!(client.get(&url).send().unwrap().status(), 401, "{url}");
    }
    let r = client
        .get(format!("http://127.0.0.1:{edge_port}/v1/presets"))
        .bearer_auth(admin.trim())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let nginx: u32 = std::fs::read_to_string(dir.path().join("state/edge/nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(nginx));

    kill(up.id(), "-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "reelay up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!pid_alive(nginx), "nginx left behind");
    for port in [edge_port, control, aws_port, gcp_port] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something still listens on {port}"
        );
    }
    eprintln!("up test took {:?}", t0.elapsed());
}

/// `status_allow` keeps cluster addresses and load away from clients outside the list (JSON
/// 403), leaves the API open, and the control listener still answers operators.
#[test]
fn status_allow_hides_the_edge_status_from_other_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let clusters = [("aws", aws.base(), 1)];
    // Started open (the helper waits on /edge/status through nginx), then restricted.
    let edge = Edge::start(dir.path(), &clusters, "");
    let client = http();
    let r = edge.reconfigure(&edge.toml(&clusters, r#"status_allow = ["10.0.0.0/8"]"#));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    for path in ["/edge/status", "/edge/metrics", "/", "/ui/app.js"] {
        let (status, _, body) = get_json_error(&client, &format!("{}{path}", edge.base()));
        assert_eq!(
            (status, body.error.code.as_str()),
            (403, "forbidden"),
            "{path}"
        );
    }
    let presets = client
        .get(format!("{}/v1/presets", edge.base()))
        .send()
        .unwrap();
    assert_eq!(presets.status(), 200, "the API is not behind status_allow");
    assert_eq!(
        edge.status().clusters.len(),
        1,
        "control listener still serves it"
    );

    // Allowing loopback opens it again, after a reload.
    let r = edge.reconfigure(&edge.toml(&clusters, r#"status_allow = ["127.0.0.0/8", "::1"]"#));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let r = client
        .get(format!("{}/edge/status", edge.base()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---------------------------------------------------------------- hostile clients (issue 12)

/// The edge's id of a request (one per answer), which names its line in the access log.
fn request_id(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl Edge {
    /// The cluster the controller chose for a request (`placed_on` in nginx's access log).
    fn placed_on(&self, request_id: &str) -> String {
        let needle = format!("\"request_id\":\"{request_id}\"");
        wait_until(
            &format!("the access log line of {request_id}"),
            Duration::from_secs(5),
            || {
                let log = self.access_log();
                let line = log.lines().find(|l| l.contains(&needle))?;
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(v["placed_on"].as_str()?.to_string())
            },
        )
    }

    /// Submits a job with `token` and returns its id and where the controller placed it.
    fn submit_placed(
        &self,
        client: &reqwest::blocking::Client,
        token: Option<&str>,
        input_url: &str,
    ) -> (String, String) {
        let mut req = client
            .post(format!("{}/v1/jobs", self.base()))
            .json(&job_spec(input_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        let rid = request_id(r.headers());
        let status = r.status();
        let body = r.text().unwrap_or_default();
        assert_eq!(status, 202, "{body}");
        let id = serde_json::from_str::<JobView>(&body).unwrap().id;
        (id, self.placed_on(&rid))
    }

    fn error_log(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.dir.join("work/logs/error.log")).unwrap_or_default(),
        )
        .into_owned()
    }
}

/// A multipart/form-data body with these parts, in this order.
fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "reelay-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let filename = if *name == "file" {
            "; filename=\"clip.mp4\""
        } else {
            ""
        };
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

const SPEC: &[u8] = br#"{"outputs":[{"preset":"mp4-360p"}]}"#;

/// What a client saw: status, content type and body (the status is 0 when the edge closed the
/// connection without an answer).
#[derive(Debug, Clone)]
struct Seen {
    what: String,
    status: u16,
    content_type: String,
    body: String,
    /// From the first byte sent until the answer (or the close).
    took: Duration,
}

impl Seen {
    /// A clear JSON 4xx: the status, `application/json` and an `{"error": {"code", ...}}`.
    fn is_json_4xx(&self) -> bool {
        (400..500).contains(&self.status)
            && self.content_type.starts_with("application/json")
            && serde_json::from_str::<ErrorBody>(&self.body).is_ok()
    }
}

/// Writes `request` on a fresh connection (all of it, or the first `send` bytes and then
/// nothing) and reads the answer until the edge closes the connection or `timeout` passes.
fn raw_exchange(addr: &str, what: &str, request: &[u8], send: usize, timeout: Duration) -> Seen {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = request[..send.min(request.len())].to_vec();
        // Written beside the reader: an edge that answers early must still be heard.
        std::thread::spawn(move || {
            for chunk in data.chunks(64 << 10) {
                if w.write_all(chunk).is_err() {
                    return;
                }
            }
        })
    };
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        // One answer is all we wait for (the edge may keep the connection for the next one).
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| raw.len() >= end + 4 + n) {
                break;
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Seen {
        what: what.to_string(),
        status,
        content_type,
        body: body.to_string(),
        took: started.elapsed(),
    }
}

/// A POST to /v1/jobs with this body, as raw bytes.
fn post_jobs(content_type: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: reelay.test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Finding 4 of issue 12: a multipart body with the file before the spec made the cluster answer
/// 400 and close with the upload unread; nginx's write failed (EPIPE), the client got a 502
/// `cluster_unavailable`, and nginx counted the cluster as failed, so the next submissions the
/// controller placed on it went to the other cluster.
#[test]
fn a_file_before_the_spec_is_the_clients_400_and_moves_no_other_job() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 2);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 2);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "",
    );
    let before = edge.status();
    let client = http();
    let upload = vec![0x47u8; 3 << 20];
    let (ctype, body) = multipart(&[("file", &upload), ("spec", SPEC)]);
    let mut placed = Vec::new();
    for _ in 0..4 {
        let r = client
            .post(format!("{}/v1/jobs", edge.base()))
            .header("content-type", &ctype)
            .body(body.clone())
            .send()
            .unwrap();
        let rid = request_id(r.headers());
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        assert_eq!(status, 400, "{text}");
        let err: ErrorBody = serde_json::from_str(&text).unwrap();
        assert_eq!(err.error.code, "malformed_multipart", "{text}");
        placed.push(edge.placed_on(&rid));
    }
    assert!(placed.iter().any(|p| p == "aws"), "{placed:?}");
    // Every following submission lands where the controller put it.
    for _ in 0..6 {
        let (id, on) = edge.submit_placed(&client, None, &stall);
        assert!(id.starts_with(&format!("{on}.")), "{id} was placed on {on}");
    }
    let after = edge.status();
    assert_eq!(
        after.generation, before.generation,
        "no reload: health never changed"
    );
    for c in &after.clusters {
        assert_eq!((c.health, c.accepting), (Health::Up, true), "{}", c.name);
    }
    let log = edge.error_log();
    assert!(!log.contains("temporarily disabled"), "{log}");
    eprintln!("misordered-upload test took {:?}", t0.elapsed());
}

/// Finding 8 of issue 12 (the edge part): a malformed request line got an HTML 500 (nginx could
/// not redirect a request without a URI to a named error location). Every answer of the edge is
/// JSON, and a client's broken request is its own 4xx, never an error of the edge.
#[test]
fn broken_requests_get_json_4xx_answers_from_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let edge = Edge::start(dir.path(), &[("aws", aws.base(), 1)], "");
    let addr = format!("127.0.0.1:{}", edge.port);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000));
    let big_header = format!(
        "GET /v1/presets HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GARBAGE\r\n\r\n".to_vec()),
        (
            "three words and more",
            b"GET /v1/presets HTTP/1.1 extra\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("no path", b"GET  HTTP/1.1\r\n\r\n".to_vec()),
        ("bad escape", b"GET /% HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "above the root",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "TLS to plain HTTP",
            b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/9.9",
            b"GET /v1/presets HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "unknown transfer coding",
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        ),
        ("no Host", b"GET /v1/presets HTTP/1.1\r\n\r\n".to_vec()),
        (
            "two Hosts",
            b"GET /v1/presets HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(),
        ),
        ("URI too long", long_uri.into_bytes()),
        ("header too large", big_header.into_bytes()),
    ];
    let mut wrong = Vec::new();
    for (what, req) in &cases {
        let seen = raw_exchange(&addr, what, req, req.len(), Duration::from_secs(5));
        eprintln!("{what}: {} {}", seen.status, seen.body.trim());
        if !seen.is_json_4xx() {
            wrong.push(seen);
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Writes the same API token into both clusters' stores before they start (a token every
/// cluster accepts; how clusters come to share tokens is not this test's business), so that
/// they run protected and answer a bad token with 401 before reading the body.
fn shared_token(data_dirs: &[PathBuf]) -> String {
    let id = "0123456789ab";
    let secret = "f".repeat(64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for dir in data_dirs {
        std::fs::create_dir_all(dir).unwrap();
        rt.block_on(async {
            let store = reelay_jobs::open_store(None, &dir.join("reelay.db"))
                .await
                .unwrap();
            store
                .create_token(reelay_jobs::NewToken {
                    id: id.into(),
                    name: "edge-test".into(),
                    secret_hash: reelay_server::auth::hash_secret(&secret),
                    scopes: vec!["admin".into()],
                })
                .await
                .unwrap();
        });
    }
    format!("rly_{id}_{secret}")
}

/// "No client can change where other clients' jobs go" (issue 12): 200 hostile requests
/// through the edge — parts in the wrong order, bodies over the limits, bad tokens, bodies that
/// stall, malformed request lines — each get their own clear JSON 4xx, leave `/edge/status` as
/// it was, and every valid submission after them lands where the controller placed it.
///
/// Stalled bodies: nginx disconnects a client whose body timed out without answering it (by
/// design), so the JSON 408 such a client hears comes from the cluster, whose own body idle
/// timeout (1 s here) is shorter than the edge's `client_body_timeout_seconds` (3 s): that is
/// how a deployment should set them.
#[test]
fn hostile_clients_get_their_own_4xx_and_move_no_other_clients_jobs() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let token = shared_token(&[
        dir.path().join("aws-127.0.0.1"),
        dir.path().join("gcp-127.0.0.1"),
    ]);
    let quick = "body_idle_timeout_seconds = 1\n";
    let aws = Cluster::start_with_config(dir.path(), "aws", "127.0.0.1", 2, quick);
    let gcp = Cluster::start_with_config(dir.path(), "gcp", "127.0.0.1", 2, quick);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "client_max_body_size = \"4m\"\nclient_body_timeout_seconds = 3",
    );
    let before = edge.status();
    let addr = format!("127.0.0.1:{}", edge.port);
    let auth = format!("Authorization: Bearer {token}\r\n");

    // 40 of each kind, as raw requests: (what, bytes, how many bytes to send).
    let mut hostile: Vec<(String, Vec<u8>, usize)> = Vec::new();
    for i in 0..40usize {
        let upload = vec![0x47u8; (256 << 10) + i * (48 << 10)];
        let (ctype, body) = multipart(&[("file", &upload), ("spec", SPEC)]);
        let req = post_jobs(&ctype, &body, &auth);
        hostile.push((format!("file before spec #{i}"), req.clone(), req.len()));

        let over = match i % 3 {
            // Content-Length over the edge's client_max_body_size: refused before any byte.
            0 => {
                let mut r = format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n", 5 << 20).into_bytes();
                r.extend(std::iter::repeat_n(b' ', 256 << 10));
                r
            }
            // Chunked, growing past client_max_body_size while it streams.
            1 => {
                let mut r = format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n{auth}Connection: close\r\n\r\n").into_bytes();
                let chunk = vec![b'x'; 256 << 10];
                for _ in 0..20 {
                    r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    r.extend_from_slice(&chunk);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            }
            // A JSON spec over the cluster's max_json_bytes (64 KiB), well under the edge's.
            _ => post_jobs("application/json", &vec![b' '; 1 << 20], &auth),
        };
        let n = over.len();
        hostile.push((format!("oversize #{i}"), over, n));

        let upload = vec![0x47u8; 512 << 10];
        let (ctype, body) = multipart(&[("spec", SPEC), ("file", &upload)]);
        let bad = match i % 4 {
            0 => String::new(),
            1 => "Authorization: Bearer rly_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000\r\n".to_string(),
            2 => "Authorization: Bearer not-a-token\r\n".to_string(),
            _ => "Authorization: Basic dXNlcjpwYXNz\r\n".to_string(),
        };
        let req = post_jobs(&ctype, &body, &bad);
        hostile.push((format!("bad token #{i}"), req.clone(), req.len()));

        // Announces 256 KiB and sends 100 bytes.
        let (ctype, body) = multipart(&[("spec", SPEC), ("file", &vec![0u8; 256 << 10])]);
        let req = post_jobs(&ctype, &body, &auth);
        let headers_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        hostile.push((format!("stalled body #{i}"), req, headers_end + 100));

        let line: &[u8] = match i % 5 {
            0 => b"GARBAGE\r\n\r\n",
            1 => b"GET /% HTTP/1.1\r\nHost: x\r\n\r\n",
            2 => b"POST /v1/jobs HTTP/1.1 and more\r\nHost: x\r\n\r\n",
            3 => b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            _ => b"POST /../v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
        };
        hostile.push((
            format!("malformed request line #{i}"),
            line.to_vec(),
            line.len(),
        ));
    }
    assert_eq!(hostile.len(), 200);

    // All at once from 16 clients.
    let queue = Arc::new(Mutex::new(hostile));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (queue, seen, addr) = (queue.clone(), seen.clone(), addr.clone());
            std::thread::spawn(move || loop {
                let Some((what, req, send)) = queue.lock().unwrap().pop() else {
                    return;
                };
                let s = raw_exchange(&addr, &what, &req, send, Duration::from_secs(20));
                seen.lock().unwrap().push(s);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let hostile_took = t0.elapsed();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200);
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for s in &seen {
        *by_status.entry(s.status).or_default() += 1;
    }
    eprintln!("hostile answers by status: {by_status:?} in {hostile_took:?}");
    let wrong: Vec<&Seen> = seen.iter().filter(|s| !s.is_json_4xx()).collect();
    assert!(
        wrong.is_empty(),
        "{} not a JSON 4xx: {wrong:#?}",
        wrong.len()
    );
    let stalled: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.what.starts_with("stalled body"))
        .collect();
    assert!(
        stalled
            .iter()
            .all(|s| s.status == 408 && s.took < Duration::from_secs(5)),
        "stalled bodies get the cluster's JSON 408 within 5 s: {stalled:#?}"
    );

    // Nothing changed for anyone else.
    let after = edge.status();
    assert_eq!(
        after.generation, before.generation,
        "no reload: health never changed"
    );
    assert_eq!(after.fail_open, before.fail_open);
    for c in &after.clusters {
        assert_eq!((c.health, c.accepting), (Health::Up, true), "{}", c.name);
    }
    let client = http();
    let mut valid = Vec::new();
    for _ in 0..10 {
        let (id, on) = edge.submit_placed(&client, Some(&token), &stall);
        assert!(id.starts_with(&format!("{on}.")), "{id} was placed on {on}");
        valid.push(id);
    }
    let c = counts(&valid);
    assert!(c.len() == 2, "both clusters take work: {c:?}");
    let log = edge.error_log();
    assert!(!log.contains("temporarily disabled"), "{log}");
    eprintln!("hostile-clients test took {:?}", t0.elapsed());
}

/// Finding 9 of issue 12: with a cluster down, the merged listing left its jobs out without a
/// word (no marker in the JSON, `reelay list` exited 0). A listing that misses a cluster says
/// so: `partial` and `missing_clusters` in the JSON (and the header), a warning from the CLI,
/// and a non-zero exit with `--strict`.
#[test]
fn a_listing_that_misses_a_cluster_says_so() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = stall_server();
    let mut aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let gcp = Cluster::start(dir.path(), "gcp", "127.0.0.1", 1);
    let edge = Edge::start(
        dir.path(),
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        "",
    );
    let on_aws = aws.submit_direct(&stall);
    let on_gcp = gcp.submit_direct(&stall);
    let client = http();
    let list = |client: &reqwest::blocking::Client| {
        let r = client
            .get(format!("{}/v1/jobs", edge.base()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let header = r
            .headers()
            .get("x-reelay-missing-clusters")
            .map(|v| v.to_str().unwrap().to_string());
        let v: serde_json::Value = r.json().unwrap();
        (v, header)
    };
    let (whole, header) = list(&client);
    assert_eq!(whole["partial"], false, "{whole}");
    assert_eq!(whole["missing_clusters"], serde_json::json!([]), "{whole}");
    assert_eq!(header, None);
    let reelay_list = |args: &[&str]| {
        Command::new(BIN)
            .arg("list")
            .args(args)
            .env("REELAY_SERVER", edge.base())
            .output()
            .unwrap()
    };
    let out = reelay_list(&["--strict"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    aws.kill9();
    // Both ways of missing a cluster: it fails to answer (just killed), and the edge knows it
    // is down and does not ask it.
    let (v, header) = list(&client);
    assert_eq!(v["partial"], true, "{v}");
    assert_eq!(v["missing_clusters"], serde_json::json!(["aws"]), "{v}");
    assert_eq!(header.as_deref(), Some("aws"));
    wait_until("aws to be marked down", Duration::from_secs(10), || {
        let s = edge.status();
        (s.clusters.iter().find(|c| c.name == "aws")?.health == Health::Down).then_some(())
    });
    let (v, header) = list(&client);
    let listed: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![on_gcp.as_str()], "{v}");
    assert_eq!(v["partial"], true, "{v}");
    assert_eq!(v["missing_clusters"], serde_json::json!(["aws"]), "{v}");
    assert_eq!(header.as_deref(), Some("aws"));
    let typed: JobList = serde_json::from_value(v).unwrap();
    assert!(typed.partial);

    // The CLI: the table and a warning; --json carries the marker; --strict fails.
    let out = reelay_list(&[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&on_gcp) && !stdout.contains(&on_aws),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning") && stderr.contains("aws"),
        "{stderr}"
    );
    let out = reelay_list(&["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["partial"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("aws"));
    let out = reelay_list(&["--strict"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "--strict fails on a partial listing"
    );
    assert!(stderr.contains("aws"), "{stderr}");
    eprintln!("partial-listing test took {:?}", t0.elapsed());
}
