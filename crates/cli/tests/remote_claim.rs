//! The remote claim (issue 16, parts 1–3), with real processes: two `reelay serve` clusters on
//! loopback, protected by signed tokens, real ffmpeg, local storage on each side.
//!
//! aws owns the jobs; its one worker slot is kept busy by a job whose input URL never answers,
//! so its next job waits at home and gcp's idle worker (configured with `[steal]` and a token
//! with the `peer` scope) takes it through `/v1/peer/tasks/…`.

use reelay_protocol::JobView;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use common::{free_port, http, stall_server, wait_until, Guard, Server, Stop, BIN};

const S3_KEY: &str = "remoteclaimkey";
const S3_SECRET: &str = "remoteclaimsecret123";

/// Issuer key and trusted keys in `dir`; returns the trusted keys file.
fn keys(dir: &Path) -> PathBuf {
    let out = Command::new(BIN)
        .args(["token", "keygen", "--id", "k1", "--out"])
        .arg(dir.join("issuer.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trusted = dir.join("trusted.keys");
    std::fs::write(&trusted, &out.stdout).unwrap();
    trusted
}

/// A signed token with these scopes, owned by `owner`.
fn token(dir: &Path, owner: &str, scopes: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "create", "--issuer-key"])
        .arg(dir.join("issuer.key"))
        .args(["--owner", owner]);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `reelay serve` as cluster `name` with one worker slot, 2 s leases and `toml`.
fn cluster(dir: &Path, name: &str, port: u16, toml: &str) -> Server {
    cluster_on(dir, name, port, toml, None)
}

/// [`cluster`] storing in the S3-compatible server at `s3` (bucket `media`), when given.
fn cluster_on(dir: &Path, name: &str, port: u16, toml: &str, s3: Option<&str>) -> Server {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--cluster", name, "--workers", "1", "--lease-seconds", "2"])
        .arg("--allow-private-urls")
        .env("RUST_LOG", "warn");
    if let Some(endpoint) = s3 {
        cmd.args(["--storage", "s3://media/reelay"])
            .env("AWS_ENDPOINT", endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_DEFAULT_REGION", "us-east-1");
    }
    Server::spawn(cmd, port)
}

struct Pair {
    dir: PathBuf,
    aws: Server,
    gcp: Option<Server>,
    gcp_port: u16,
    gcp_toml: String,
    /// submit + read, owner `team`.
    user: String,
    admin: String,
    peer: String,
}

impl Pair {
    /// aws (the owner, offering a task after 0.5 s at home) and, when `with_gcp`, gcp (which
    /// takes aws's tasks with a peer token).
    fn start(dir: &Path, with_gcp: bool) -> Pair {
        Self::start_with(dir, with_gcp, None)
    }

    /// [`Pair::start`] with aws storing in S3 at `aws_s3` (gcp keeps a local directory).
    fn start_with(dir: &Path, with_gcp: bool, aws_s3: Option<&str>) -> Pair {
        let trusted = keys(dir);
        let user = token(dir, "team", &["submit", "read"]);
        let admin = token(dir, "ops", &["admin"]);
        let peer = token(dir, "gcp", &["peer"]);
        let peer_file = dir.join("peer.token");
        std::fs::write(&peer_file, &peer).unwrap();
        let aws_port = free_port();
        let aws = cluster_on(
            dir,
            "aws",
            aws_port,
            &format!(
                "trusted_keys = {trusted:?}\n[steal]\noffer_after_seconds = 0.5\n",
                trusted = trusted.display().to_string()
            ),
            aws_s3,
        );
        let gcp_port = free_port();
        let gcp_toml = format!(
            "trusted_keys = {trusted:?}\n[steal]\npoll_ms = 200\n[[steal.peers]]\nname = \"aws\"\n\
             url = \"http://127.0.0.1:{aws_port}\"\ntoken_file = {peer_file:?}\n",
            trusted = trusted.display().to_string(),
            peer_file = peer_file.display().to_string(),
        );
        let gcp = with_gcp.then(|| cluster(dir, "gcp", gcp_port, &gcp_toml));
        Pair {
            dir: dir.to_path_buf(),
            aws,
            gcp,
            gcp_port,
            gcp_toml,
            user,
            admin,
            peer,
        }
    }

    fn restart_gcp(&mut self) {
        self.gcp = Some(cluster(&self.dir, "gcp", self.gcp_port, &self.gcp_toml));
    }

    /// A job on aws whose input never answers: it holds aws's only slot.
    fn occupy_aws(&self) -> String {
        let r = http()
            .post(format!("{}/v1/jobs", self.aws.base()))
            .bearer_auth(&self.user)
            .json(&common::job_spec(&stall_server()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        let id = r.json::<JobView>().unwrap().id;
        wait_until(
            "the stalled job to hold aws's slot",
            Duration::from_secs(20),
            || (self.job(&id).status.as_str() == "running").then_some(()),
        );
        id
    }

    /// Uploads `file` to aws (its input then lives in aws's storage).
    fn submit_upload(&self, file: &Path) -> String {
        let out = Command::new(BIN)
            .args(["submit"])
            .arg(file)
            .args(["--preset", "mp4-360p", "--json"])
            .env("REELAY_SERVER", self.aws.base())
            .env("REELAY_TOKEN", &self.user)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<JobView>(&out.stdout).unwrap().id
    }

    fn job(&self, id: &str) -> JobView {
        http()
            .get(format!("{}/v1/jobs/{id}", self.aws.base()))
            .bearer_auth(&self.user)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn wait_status(&self, id: &str, want: &str, timeout: Duration) -> JobView {
        wait_until(&format!("job {id} {want}"), timeout, || {
            let j = self.job(id);
            assert!(
                j.status.as_str() != "failed" || want == "failed",
                "job failed: {:?}",
                j.error
            );
            (j.status.as_str() == want).then_some(j)
        })
    }

    fn cancel(&self, id: &str) {
        let r = http()
            .post(format!("{}/v1/jobs/{id}/cancel", self.aws.base()))
            .bearer_auth(&self.user)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_gcp_worker_encodes_an_aws_task_into_aws_storage() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::start(dir.path(), true);
    let stalled = pair.occupy_aws();
    let input = common::clip(dir.path(), "clip.mp4", "320x240", 2, true);
    let submitted = std::time::Instant::now();
    let id = pair.submit_upload(&input);
    let job = pair.wait_status(&id, "succeeded", Duration::from_secs(90));
    eprintln!(
        "remote claim: submitted to succeeded on aws via gcp in {:.2} s (timings {:?})",
        submitted.elapsed().as_secs_f64(),
        job.tasks[0].timings
    );

    assert_eq!(job.cluster, "aws");
    assert!(id.starts_with("aws."), "{id}");
    assert_eq!(job.tasks.len(), 1);
    assert_eq!(
        job.tasks[0].ran_on.as_deref(),
        Some("gcp"),
        "{:?}",
        job.tasks
    );
    assert_eq!(job.tasks[0].attempts, 1);
    assert!(
        job.tasks[0].timings.is_some(),
        "the peer's timings reach the owner"
    );
    // The stalled job runs at home.
    assert_eq!(pair.job(&stalled).tasks[0].ran_on.as_deref(), Some("aws"));

    // The outputs are aws's: in its storage, served by its api, and nowhere in gcp's.
    assert!(!job.outputs.is_empty());
    let aws_files = files_under(&dir.path().join(format!("aws/storage/outputs/{id}")));
    assert!(!aws_files.is_empty(), "no outputs in aws storage");
    assert!(files_under(&dir.path().join("gcp/storage/outputs")).is_empty());
    assert!(
        files_under(&dir.path().join("gcp/peer")).is_empty(),
        "gcp staging left behind"
    );
    let out = &job.outputs[0];
    let body = http()
        .get(format!("{}{}", pair.aws.base(), out.url))
        .bearer_auth(&pair.user)
        .send()
        .unwrap();
    assert_eq!(body.status(), 200);
    let bytes = body.bytes().unwrap();
    assert_eq!(bytes.len() as u64, out.size);
    let file = dir.path().join("out.mp4");
    std::fs::write(&file, &bytes).unwrap();
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(streams.contains("video"), "not a video: {streams}");
    pair.cancel(&stalled);
}

#[test]
fn a_peer_worker_killed_mid_task_sends_the_task_home_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut pair = Pair::start(dir.path(), true);
    let stalled = pair.occupy_aws();
    // Long enough to be caught encoding on a 2-core machine.
    let input = common::clip(dir.path(), "long.mp4", "1280x720", 30, true);
    let id = pair.submit_upload(&input);
    wait_until("gcp to run aws's task", Duration::from_secs(60), || {
        let j = pair.job(&id);
        let t = &j.tasks[0];
        (t.status == "running" && t.ran_on.as_deref() == Some("gcp") && t.progress > 0.0)
            .then_some(())
    });
    let gcp = pair.gcp.take().unwrap();
    drop(gcp); // SIGKILL: the worker vanishes mid-encode.
    let killed = std::time::Instant::now();

    // gcp comes back and asks again: the task moved once, it is never offered again, although
    // its lease has expired and aws's own slot is still busy.
    pair.restart_gcp();
    std::thread::sleep(Duration::from_secs(4));
    let j = pair.job(&id);
    assert_eq!(j.tasks[0].ran_on.as_deref(), Some("gcp"));
    assert_eq!(
        j.tasks[0].attempts, 1,
        "the task moved twice: {:?}",
        j.tasks
    );

    // aws's slot frees: the task runs at home and succeeds, once.
    pair.cancel(&stalled);
    let job = pair.wait_status(&id, "succeeded", Duration::from_secs(120));
    eprintln!(
        "remote worker killed: the task succeeded at home {:.2} s later (4 s of it waiting on purpose)",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(job.tasks[0].ran_on.as_deref(), Some("aws"));
    assert_eq!(job.tasks[0].attempts, 2);
    assert!(job.outputs.iter().all(|o| o.url.contains(&id)));
    let finished = files_under(&dir.path().join(format!("aws/storage/outputs/{id}")));
    assert!(
        finished
            .iter()
            .all(|f| f.to_string_lossy().contains("/a2/")),
        "files of the lost attempt left: {finished:?}"
    );
}

/// Every remote-claim route, with its method.
fn routes(task: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method;
    let t = format!("/v1/peer/tasks/{task}");
    vec![
        (Method::POST, "/v1/peer/tasks/claim".to_string()),
        (Method::POST, format!("{t}/renew")),
        (Method::POST, format!("{t}/complete")),
        (Method::POST, format!("{t}/fail")),
        (Method::POST, format!("{t}/release")),
        (Method::POST, format!("{t}/upload-url")),
        (
            Method::GET,
            format!("{t}/objects/inputs/aws.x/source?worker=w&attempt=1"),
        ),
        (
            Method::PUT,
            format!("{t}/objects/outputs/aws.x/a1/o.mp4?worker=w&attempt=1"),
        ),
    ]
}

#[test]
fn remote_claim_needs_the_peer_credential_and_stays_in_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::start(dir.path(), false);
    let c = http();
    let base = pair.aws.base();
    let send = |m: &reqwest::Method, path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut r = c.request(m.clone(), format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if *m == reqwest::Method::PUT {
            r = r.body("x");
        } else if *m == reqwest::Method::POST {
            r = r.json(&body);
        }
        r.send().unwrap()
    };
    let body = serde_json::json!({"worker": "w", "attempt": 1, "outputs": [],
        "error": {"code": "x", "message": "y"}, "key": "outputs/aws.x/a1/o.mp4"});
    for (m, path) in routes("aws.x.transcode") {
        assert_eq!(
            send(&m, &path, None, body.clone()).status(),
            401,
            "{m} {path}"
        );
        for t in [&pair.user, &pair.admin] {
            let r = send(&m, &path, Some(t), body.clone());
            assert_eq!(r.status(), 403, "{m} {path}");
        }
        let r = send(&m, &path, Some(&pair.peer), body.clone());
        assert!(
            ![401, 403].contains(&r.status().as_u16()) && r.status().as_u16() < 500,
            "{m} {path} with the peer token: {}",
            r.status()
        );
    }
    // The peer token is nothing else: not a reader of jobs.
    assert_eq!(
        send(
            &reqwest::Method::GET,
            "/v1/jobs",
            Some(&pair.peer),
            body.clone()
        )
        .status(),
        403
    );

    // A real claim, made by this test as the peer.
    let stalled = pair.occupy_aws();
    let input = common::clip(dir.path(), "clip.mp4", "160x120", 1, false);
    let id = pair.submit_upload(&input);
    let claim = |worker: &str| {
        send(
            &reqwest::Method::POST,
            "/v1/peer/tasks/claim",
            Some(&pair.peer),
            serde_json::json!({"worker": worker}),
        )
    };
    let task: serde_json::Value =
        wait_until("a task for the peer", Duration::from_secs(10), || {
            let r = claim("test-w");
            (r.status() == 200).then(|| r.json().unwrap())
        });
    let task_id = task["task_id"].as_str().unwrap().to_string();
    assert_eq!(task_id, format!("{id}.transcode"));
    assert_eq!(task["attempt"], 1);
    let prefix = task["output_prefix"].as_str().unwrap().to_string();
    assert_eq!(prefix, format!("outputs/{id}/a1"));
    let source = format!("inputs/{id}/source");
    assert!(task["inputs"].to_string().contains(&source), "{task}");
    assert_eq!(pair.job(&id).tasks[0].ran_on.as_deref(), Some("gcp"));

    let t = format!("/v1/peer/tasks/{task_id}");
    let q = "?worker=test-w&attempt=1";
    let get = |key: &str, query: &str| {
        send(
            &reqwest::Method::GET,
            &format!("{t}/objects/{key}{query}"),
            Some(&pair.peer),
            body.clone(),
        )
    };
    let put = |key: &str, query: &str| {
        send(
            &reqwest::Method::PUT,
            &format!("{t}/objects/{key}{query}"),
            Some(&pair.peer),
            body.clone(),
        )
    };
    // Its own input, byte for byte; nothing else.
    let r = get(&source, q);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().unwrap().len() as u64,
        std::fs::metadata(&input).unwrap().len()
    );
    assert_eq!(get(&format!("inputs/{stalled}/source"), q).status(), 403);
    assert_eq!(get(&format!("outputs/{id}/a1/x.mp4"), q).status(), 403);
    assert_eq!(get(&source, "?worker=other&attempt=1").status(), 409);
    assert_eq!(get(&source, "?worker=test-w&attempt=2").status(), 409);
    // Writes only under its attempt's prefix.
    assert_eq!(put(&format!("{prefix}/x.mp4"), q).status(), 201);
    assert!(dir
        .path()
        .join(format!("aws/storage/{prefix}/x.mp4"))
        .exists());
    assert_eq!(put(&format!("outputs/{id}/a2/x.mp4"), q).status(), 403);
    assert_eq!(put(&format!("inputs/{id}/source"), q).status(), 403);
    assert_eq!(put(&format!("{prefix}/../a2/x.mp4"), q).status(), 403);
    // A completion may not name files outside the attempt.
    let r = send(
        &reqwest::Method::POST,
        &format!("{t}/complete"),
        Some(&pair.peer),
        serde_json::json!({"worker": "test-w", "attempt": 1, "outputs": [
            {"name": "x.mp4", "key": format!("inputs/{stalled}/source"), "size": 1,
             "content_type": "video/mp4"}]}),
    );
    assert_eq!(r.status(), 422);
    // Released: back home, its files gone, and never offered to a peer again.
    let r = send(
        &reqwest::Method::POST,
        &format!("{t}/release"),
        Some(&pair.peer),
        serde_json::json!({"worker": "test-w", "attempt": 1}),
    );
    assert_eq!(r.status(), 204);
    assert!(!dir
        .path()
        .join(format!("aws/storage/{prefix}/x.mp4"))
        .exists());
    assert_eq!(pair.job(&id).tasks[0].status, "queued");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(claim("test-w").status(), 204, "a task moved twice");
    pair.cancel(&stalled);
    let job = pair.wait_status(&id, "succeeded", Duration::from_secs(60));
    assert_eq!(job.tasks[0].ran_on.as_deref(), Some("aws"));
}

#[test]
fn with_s3_at_the_owner_the_peer_moves_files_through_presigned_urls() {
    let dir = tempfile::tempdir().unwrap();
    let s3_port = free_port();
    std::fs::create_dir_all(dir.path().join("s3/media")).unwrap();
    let s3 = Command::new(std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".into()))
        .args(["--host", "127.0.0.1", "--port", &s3_port.to_string()])
        .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
        .arg(dir.path().join("s3"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("s3s-fs (make test installs it)");
    let _s3 = Guard::new(s3, Stop::Kill);
    wait_until("s3s-fs", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", s3_port)).ok()
    });
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let pair = Pair::start_with(dir.path(), true, Some(&endpoint));
    let stalled = pair.occupy_aws();
    let input = common::clip(dir.path(), "clip.mp4", "320x240", 2, true);
    let id = pair.submit_upload(&input);
    let job = pair.wait_status(&id, "succeeded", Duration::from_secs(90));
    assert_eq!(
        job.tasks[0].ran_on.as_deref(),
        Some("gcp"),
        "{:?}",
        job.tasks
    );
    // The outputs are in aws's bucket, and no byte went through aws's object routes.
    let in_bucket = files_under(&dir.path().join(format!("s3/media/reelay/outputs/{id}")));
    assert!(!in_bucket.is_empty(), "no outputs in aws's bucket");
    assert!(files_under(&dir.path().join("gcp/storage/outputs")).is_empty());
    let metrics = http()
        .get(format!("{}/metrics", pair.aws.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("reelay_peer_tasks_total{event=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.contains("objects/{*key}") && l.starts_with("reelay_http_requests_total")),
        "files went through the api instead of presigned URLs"
    );
    let out = &job.outputs[0];
    let body = http()
        .get(format!("{}{}", pair.aws.base(), out.url))
        .bearer_auth(&pair.user)
        .send()
        .unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().unwrap().len() as u64, out.size);
    pair.cancel(&stalled);
}
