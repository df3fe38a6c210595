//! The remote claim (issue 16, parts 1–3), with real processes: two `reelay serve` clusters on
//! loopback, protected by signed tokens, real ffmpeg, local storage on each side.
//!
//! aws owns the jobs; its one worker slot is kept busy by a job whose input URL never answers,
//! so its next job waits at home and gcp's idle worker (configured with `[steal]` and a token
//! with the `peer` scope) takes it through `/v1/peer/tasks/…`: straight at aws's api, or (as in
//! production) through a `reelay edge` in front of aws at `/clusters/aws/v1/peer/…`, whose link
//! to aws is mutual TLS when aws serves HTTPS.

use reelay_protocol::JobView;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use common::stack::{serve, Stack, Tokens};
use common::{
    descendants, free_port, http, kill, stall_server, wait_until, Edge, Guard, Server, Stop, TestCa,
};

const S3_KEY: &str = "remoteclaimkey";
const S3_SECRET: &str = "remoteclaimsecret123";

/// How gcp's worker reaches aws's remote-claim routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// gcp's `[steal]` url is aws's api itself.
    Direct,
    /// Through a `reelay edge` in front of aws (with `[auth]`): `http://EDGE/clusters/aws`.
    Edge,
    /// The same, and the edge reaches aws over mutual TLS: aws serves only HTTPS, only to
    /// clients with a certificate from the test CA (the edge's, and this test's).
    EdgeMtls,
    /// [`Link::EdgeMtls`] with the edge serving HTTPS under a certificate from that private
    /// CA: gcp trusts it through its peer's `ca_file`.
    HttpsEdgeMtls,
    /// gcp's `[steal]` url is aws's api itself, HTTPS only to clients with a certificate from
    /// the test CA: gcp's peer entry names that CA (`ca_file`) and its own certificate
    /// (`client_cert`, `client_key`).
    DirectMtls,
}

/// What [`start`] starts.
struct Setup {
    /// Start gcp (the thief) too.
    gcp: bool,
    /// aws stores in the S3-compatible server at this endpoint (bucket `media`).
    aws_s3: Option<String>,
    /// aws's `[steal] presign` (on by default): hand the peer presigned URLs when it can.
    aws_presign: bool,
    /// aws's `--key-input-prefix` (gcp never has one).
    aws_key_prefix: Option<&'static str>,
    /// aws's `[steal] max_peer_hold_seconds` (a day by default).
    aws_max_peer_hold: Option<u64>,
    link: Link,
    /// Appended to edge.toml's top-level settings.
    edge_extra: &'static str,
}

impl Setup {
    fn new(gcp: bool, link: Link) -> Setup {
        Setup {
            gcp,
            aws_s3: None,
            aws_presign: true,
            aws_key_prefix: None,
            aws_max_peer_hold: None,
            link,
            edge_extra: "",
        }
    }
}

/// aws (the owner, offering a task after 0.5 s at home) and, when `setup.gcp`, gcp (which takes
/// aws's tasks with a peer token, over `setup.link`).
fn start(dir: &Path, setup: Setup) -> Stack {
    let tokens = Tokens::mint(dir);
    let trusted_path = tokens.trusted.display().to_string();
    let aws_port = free_port();
    let mut aws_toml = tokens.aws_config(0.5);
    if !setup.aws_presign {
        aws_toml.push_str("presign = false\n");
    }
    if let Some(secs) = setup.aws_max_peer_hold {
        aws_toml.push_str(&format!("max_peer_hold_seconds = {secs}\n"));
    }
    let mut cmd = serve(dir, "aws", aws_port, &aws_toml);
    if let Some(prefix) = setup.aws_key_prefix {
        cmd.args(["--key-input-prefix", prefix]);
    }
    if let Some(endpoint) = &setup.aws_s3 {
        cmd.args(["--storage", "s3://media/reelay"])
            .env("AWS_ENDPOINT", endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_DEFAULT_REGION", "us-east-1");
    }
    let mtls = matches!(
        setup.link,
        Link::EdgeMtls | Link::HttpsEdgeMtls | Link::DirectMtls
    );
    let certs = dir.join("certs");
    let ca = mtls.then(|| {
        std::fs::create_dir_all(&certs).unwrap();
        TestCa::new(&certs)
    });
    let (aws, mut edge_tls) = if let Some(ca) = &ca {
        ca.leaf("aws", &["aws.reelay.test", "127.0.0.1"]);
        ca.leaf("edge-client", &["reelay-edge"]);
        cmd.arg("--tls-cert")
            .arg(certs.join("aws.pem"))
            .arg("--tls-key")
            .arg(certs.join("aws.key"))
            .arg("--tls-client-ca")
            .arg(ca.ca_pem());
        let client = ca.client(Some("edge-client"));
        let base = format!("https://127.0.0.1:{aws_port}");
        let aws = Server::spawn_with(cmd, &base, aws_port, &client);
        // Without a certificate from the CA nothing gets through to aws.
        assert!(ca
            .client(None)
            .get(format!("{base}/healthz"))
            .send()
            .is_err());
        let c = certs.display();
        let tls = format!(
            "upstream_client_cert = \"{c}/edge-client.pem\"\nupstream_client_key = \"{c}/edge-client.key\"\n\
             upstream_ca = \"{c}/ca.pem\"\nupstream_server_name = \"aws.reelay.test\"\n"
        );
        (aws, tls)
    } else {
        (Server::spawn(cmd, aws_port), String::new())
    };
    // The edge's own HTTPS certificate, from the same private CA; gcp trusts that CA only.
    let mut peer_tls = String::new();
    let edge_client = match (&ca, setup.link) {
        (Some(ca), Link::HttpsEdgeMtls) => {
            ca.leaf("edge-server", &["127.0.0.1"]);
            let c = certs.display();
            edge_tls.push_str(&format!(
                "tls_cert = \"{c}/edge-server.pem\"\ntls_key = \"{c}/edge-server.key\"\n"
            ));
            peer_tls = format!("ca_file = \"{c}/ca.pem\"\n");
            Some(ca.client(None))
        }
        (Some(ca), Link::DirectMtls) => {
            ca.leaf("gcp-peer", &["gcp-workers"]);
            let c = certs.display();
            peer_tls = format!(
                "ca_file = \"{c}/ca.pem\"\nclient_cert = \"{c}/gcp-peer.pem\"\n\
                 client_key = \"{c}/gcp-peer.key\"\n"
            );
            None
        }
        _ => None,
    };
    let edge = (!matches!(setup.link, Link::Direct | Link::DirectMtls)).then(|| {
        let extra = format!(
            "{edge_tls}{}\n[auth]\ntrusted_keys = {trusted_path:?}\nlegacy_tokens = false\n",
            setup.edge_extra
        );
        let clusters = [("aws", aws.base(), 1)];
        match edge_client {
            Some(client) => Edge::start_https(dir, &clusters, &extra, client),
            None => Edge::start(dir, &clusters, &extra),
        }
    });
    let peer_url = match &edge {
        Some(e) => format!("{}/clusters/aws", e.base()),
        None => aws.base(),
    };
    let gcp_toml = tokens.gcp_config("poll_ms = 200\n", &peer_url, &peer_tls);
    let mut stack = Stack::new(dir, tokens, aws, edge);
    if setup.gcp {
        stack.start_gcp(&gcp_toml);
    }
    stack
}

/// The setup every stealing test starts from: aws's slot held by a stalled job, and an uploaded
/// clip of `size` and `secs` (with audio) waiting at home for gcp to take, uploaded through the
/// edge when there is one (the CLI has no client certificate for an mTLS-only aws). Returns the
/// stalled job, the waiting job and the clip.
fn job_waiting_at_home(s: &Stack, size: &str, secs: u32) -> (String, String, PathBuf) {
    let stalled = s.occupy(&s.aws);
    let input = common::clip(&s.dir, "clip.mp4", size, secs, true);
    let id = match &s.edge {
        Some(edge) => s.submit_upload(edge, &input),
        None => s.submit_upload(&s.aws, &input),
    };
    (stalled, id, input)
}

/// The value of the Prometheus sample `name` (labels included) in `text`, 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A request body that sends one byte, then waits for a signal before it ends.
struct SlowBody {
    first: bool,
    wait: std::sync::mpsc::Receiver<()>,
}

impl std::io::Read for SlowBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if std::mem::take(&mut self.first) {
            buf[0] = b'x';
            return Ok(1);
        }
        let _ = self.wait.recv();
        Ok(0)
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

/// gcp runs an aws job's task over `link`: the job succeeds on aws with `ran_on: gcp`, its
/// outputs in aws's storage and nowhere at gcp.
fn a_gcp_worker_encodes_an_aws_task(dir: &Path, link: Link) -> Stack {
    let pair = start(dir, Setup::new(true, link));
    let submitted = std::time::Instant::now();
    let (stalled, id, _) = job_waiting_at_home(&pair, "320x240", 2);
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(90));
    eprintln!(
        "remote claim ({link:?}): submitted to succeeded on aws via gcp in {:.2} s (timings {:?})",
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
    // The task done, gcp's slot reads idle again (its heartbeat drops the task at once).
    if let Some(gcp) = &pair.gcp {
        wait_until("gcp's slot to read idle", Duration::from_secs(5), || {
            (pair.load(gcp).running == 0).then_some(())
        });
    }
    // The stalled job runs at home.
    assert_eq!(
        pair.job(&pair.aws, &stalled).tasks[0].ran_on.as_deref(),
        Some("aws")
    );

    // The outputs are aws's: in its storage, served by its api, and nowhere in gcp's.
    assert!(!job.outputs.is_empty());
    let aws_files = files_under(&dir.join(format!("aws/storage/outputs/{id}")));
    assert!(!aws_files.is_empty(), "no outputs in aws storage");
    assert!(files_under(&dir.join("gcp/storage/outputs")).is_empty());
    assert!(
        files_under(&dir.join("gcp/peer")).is_empty(),
        "gcp staging left behind"
    );
    let out = &job.outputs[0];
    let body = pair.download(&pair.aws, &out.url);
    assert_eq!(body.status(), 200);
    let bytes = body.bytes().unwrap();
    assert_eq!(bytes.len() as u64, out.size);
    let file = dir.join("out.mp4");
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
    let metrics = pair.metrics(&pair.aws);
    assert_eq!(
        sample(&metrics, "reelay_peer_tasks_total{event=\"completed\"}"),
        1.0,
        "{metrics}"
    );
    pair.cancel(&pair.aws, &stalled);
    pair
}

#[test]
fn a_gcp_worker_encodes_an_aws_task_into_aws_storage() {
    let dir = tempfile::tempdir().unwrap();
    a_gcp_worker_encodes_an_aws_task(dir.path(), Link::Direct);
}

/// The edge's access log as (method, uri, status) per request.
fn edge_requests(edge: &Edge) -> Vec<(String, String, u16)> {
    edge.access_log()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((
                v["method"].as_str()?.to_string(),
                v["uri"].as_str()?.to_string(),
                u16::try_from(v["status"].as_u64()?).ok()?,
            ))
        })
        .collect()
}

/// The production path: gcp's `[steal]` url is the edge's `/clusters/aws`, and the edge reaches
/// aws (HTTPS only, client certificates only) over mutual TLS, checking the peer token first.
#[test]
fn through_the_edge_over_mutual_tls_a_gcp_worker_encodes_an_aws_task() {
    let dir = tempfile::tempdir().unwrap();
    let pair = a_gcp_worker_encodes_an_aws_task(dir.path(), Link::EdgeMtls);
    // Every step of the remote claim went through the edge and was answered by aws.
    let requests = edge_requests(pair.edge());
    for (method, route, status) in [
        ("POST", "/v1/peer/tasks/claim", 200),
        ("POST", "/upload-url", 200),
        ("GET", "/objects/inputs/", 200),
        ("PUT", "/objects/outputs/", 201),
        ("POST", "/complete", 200),
    ] {
        assert!(
            requests.iter().any(|(m, u, s)| m == method
                && u.starts_with("/clusters/aws/v1/peer/tasks/")
                && u.contains(route)
                && *s == status),
            "no {method} {route} answered {status} through the edge: {requests:?}"
        );
    }
    assert!(
        !requests
            .iter()
            .any(|(_, u, s)| u.contains("/peer/") && *s >= 500),
        "a peer request failed at the edge: {requests:?}"
    );
}

/// A thief reaches an edge that serves HTTPS under a private CA: gcp's peer entry names that CA
/// (`ca_file`), and the whole remote claim runs through the HTTPS edge and on to aws over mutual
/// TLS. Anyone without the CA cannot even complete the handshake.
#[test]
fn a_thief_trusts_an_https_edge_by_its_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pair = a_gcp_worker_encodes_an_aws_task(dir.path(), Link::HttpsEdgeMtls);
    let edge = pair.edge();
    assert!(edge.base().starts_with("https://"), "{}", edge.base());
    let claim = format!("{}/clusters/aws/v1/peer/tasks/claim", edge.base());
    let public_roots = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let err = public_roots
        .post(&claim)
        .bearer_auth(&pair.tokens.peer)
        .json(&serde_json::json!({"worker": "w"}))
        .send()
        .expect_err("the edge's certificate is from a private CA");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    let requests = edge_requests(edge);
    for route in ["/v1/peer/tasks/claim", "/complete"] {
        assert!(
            requests
                .iter()
                .any(|(m, u, s)| m == "POST" && u.contains(route) && *s == 200),
            "no POST {route} through the HTTPS edge: {requests:?}"
        );
    }
}

/// Straight to an aws that serves HTTPS only to clients with a certificate from the private CA:
/// gcp's peer entry trusts that CA and presents its own certificate (`client_cert`).
#[test]
fn a_thief_presents_its_client_certificate_to_an_mtls_peer() {
    let dir = tempfile::tempdir().unwrap();
    a_gcp_worker_encodes_an_aws_task(dir.path(), Link::DirectMtls);
}

/// A `[[steal.peers]]` entry whose files are missing or unusable stops the worker at start with
/// the setting named, instead of a worker that never steals.
#[test]
fn unusable_peer_files_stop_the_worker_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("peer.token"), "rly_x\n").unwrap();
    std::fs::write(d.join("junk.pem"), "not a certificate\n").unwrap();
    let peer = |extra: &str| {
        format!(
            "[[steal.peers]]\nname = \"aws\"\nurl = \"https://127.0.0.1:9/clusters/aws\"\n\
             token_file = {:?}\n{extra}",
            d.join("peer.token").display().to_string()
        )
    };
    let missing = d.join("nothing.pem").display().to_string();
    let junk = d.join("junk.pem").display().to_string();
    for (toml, want) in [
        (peer(&format!("ca_file = {missing:?}\n")), "ca_file"),
        (peer(&format!("ca_file = {junk:?}\n")), "no PEM certificate"),
        (peer(&format!("client_cert = {junk:?}\n")), "go together"),
        (
            peer(&format!("client_cert = {junk:?}\nclient_key = {junk:?}\n")),
            "client_cert",
        ),
        (
            peer("").replace("peer.token", "missing.token"),
            "token_file",
        ),
    ] {
        let mut child = serve(d, "gcp", free_port(), &toml)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the worker started with {toml}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{toml}");
        assert!(
            stderr.contains("steal.peers") && stderr.contains(want),
            "{want:?} not in: {stderr}"
        );
    }
}

/// With `rate_limit_per_second` at the edge, clients are limited per address but the remote
/// claim is not: a thief's polls and renewals are never refused with a 429.
#[test]
fn the_edge_rate_limit_spares_the_remote_claim() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        edge_extra: "rate_limit_per_second = 1\nrate_limit_burst = 1\n",
        ..Setup::new(false, Link::Edge)
    };
    let pair = start(dir.path(), setup);
    let edge = pair.edge();
    let c = http();
    let claims: Vec<u16> = (0..20)
        .map(|_| {
            c.post(edge.url("/clusters/aws/v1/peer/tasks/claim"))
                .bearer_auth(&pair.tokens.peer)
                .json(&serde_json::json!({"worker": "w"}))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(claims.iter().all(|s| *s == 204), "{claims:?}");
    let reads: Vec<u16> = (0..20)
        .map(|_| {
            c.get(edge.url("/v1/jobs/aws.01JAAAAAAAAAAAAAAAAAAAAAAA"))
                .bearer_auth(&pair.tokens.user)
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(reads.contains(&429), "the client limit is off: {reads:?}");
}

#[test]
fn a_peer_worker_killed_mid_task_sends_the_task_home_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut pair = start(dir.path(), Setup::new(true, Link::Direct));
    // Long enough to be caught encoding on a 2-core machine.
    let (stalled, id, _) = job_waiting_at_home(&pair, "1280x720", 30);
    wait_until("gcp to run aws's task", Duration::from_secs(60), || {
        let j = pair.job(&pair.aws, &id);
        let t = &j.tasks[0];
        (t.status == "running" && t.ran_on.as_deref() == Some("gcp") && t.progress > 0.0)
            .then_some(())
    });
    // gcp's own report shows its one slot busy with aws's task, for the time it has left
    // (the worker's heartbeat carries it: gcp's store has no row for the task).
    let busy = pair.load(pair.gcp());
    assert_eq!((busy.capacity, busy.running), (1, 1), "{busy:?}");
    assert!(
        busy.running_remaining_seconds
            .first()
            .is_some_and(|s| *s > 0.0),
        "{busy:?}"
    );
    let gcp = pair.gcp.take().unwrap();
    drop(gcp); // SIGKILL: the worker vanishes mid-encode.
    let killed = std::time::Instant::now();

    // gcp comes back and asks again: the task moved once, it is never offered again, although
    // its lease has expired and aws's own slot is still busy.
    pair.restart_gcp();
    std::thread::sleep(Duration::from_secs(4));
    let j = pair.job(&pair.aws, &id);
    assert_eq!(j.tasks[0].ran_on.as_deref(), Some("gcp"));
    assert_eq!(
        j.tasks[0].attempts, 1,
        "the task moved twice: {:?}",
        j.tasks
    );

    // aws's slot frees: the task runs at home and succeeds, once.
    pair.cancel(&pair.aws, &stalled);
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(120));
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

/// A peer that says the task cannot succeed does not fail the job: the task goes home, never
/// to move again, and succeeds there.
#[test]
fn a_peers_permanent_failure_sends_the_task_home() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start(dir.path(), Setup::new(false, Link::Direct));
    let (stalled, id, _) = job_waiting_at_home(&pair, "160x120", 1);
    let task: serde_json::Value =
        wait_until("a task for the peer", Duration::from_secs(10), || {
            let r = pair.peer_claim("test-w", None);
            (r.status() == 200).then(|| r.json().unwrap())
        });
    let task_id = task["task_id"].as_str().unwrap();
    let r = pair
        .aws
        .client
        .post(format!("{}/v1/peer/tasks/{task_id}/fail", pair.aws.base))
        .bearer_auth(&pair.tokens.peer)
        .json(&serde_json::json!({"worker": "test-w", "attempt": 1,
            "error": {"code": "transcode_failed", "message": "the peer says no"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["outcome"],
        "requeued"
    );
    let j = pair.job(&pair.aws, &id);
    assert!(
        !j.status.is_terminal(),
        "the peer's verdict ended the job: {j:?}"
    );
    assert_eq!(j.tasks[0].status, "queued");
    std::thread::sleep(Duration::from_millis(800)); // past offer_after_seconds (0.5 s)
    assert_eq!(
        pair.peer_claim("test-w", None).status(),
        204,
        "a task moved twice"
    );
    pair.cancel(&pair.aws, &stalled);
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(60));
    assert_eq!(job.tasks[0].ran_on.as_deref(), Some("aws"));
    assert_eq!(job.tasks[0].attempts, 2);
}

/// A peer that renews for ever (broken, or a compromised cluster) holds the task no longer than
/// `[steal] max_peer_hold_seconds`: its renewals, and the object reads that renew too, are
/// refused from then on, the lease runs out, and the task runs at home.
#[test]
fn a_peer_renewing_past_its_hold_limit_loses_the_task_to_home() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        aws_max_peer_hold: Some(3),
        ..Setup::new(false, Link::Direct)
    };
    let pair = start(dir.path(), setup);
    let (stalled, id, _) = job_waiting_at_home(&pair, "160x120", 1);
    let task: serde_json::Value =
        wait_until("a task for the peer", Duration::from_secs(10), || {
            let r = pair.peer_claim("test-w", None);
            (r.status() == 200).then(|| r.json().unwrap())
        });
    let task_id = task["task_id"].as_str().unwrap().to_string();
    let claimed = std::time::Instant::now();
    // Freed at home now; only the peer's renewals keep the task from running there.
    pair.cancel(&pair.aws, &stalled);
    let base = format!("{}/v1/peer/tasks/{task_id}", pair.aws.base);
    let renew = |progress: f64| -> String {
        let r = pair
            .aws
            .client
            .post(format!("{base}/renew"))
            .bearer_auth(&pair.tokens.peer)
            .json(&serde_json::json!({"worker": "test-w", "attempt": 1, "progress": progress}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Renewing every 0.5 s (the lease is 2 s) with rising progress, as a live worker would.
    let mut progress = 0.0;
    let mut outcomes = Vec::new();
    while claimed.elapsed() < Duration::from_secs(6) {
        progress += 0.01;
        outcomes.push((claimed.elapsed().as_secs_f64(), renew(progress)));
        std::thread::sleep(Duration::from_millis(500));
    }
    let held: Vec<f64> = outcomes
        .iter()
        .filter(|(_, o)| o == "renewed")
        .map(|(t, _)| *t)
        .collect();
    assert!(!held.is_empty(), "{outcomes:?}");
    assert!(
        held.iter().all(|t| *t < 3.0),
        "renewed past the 3 s hold limit: {outcomes:?}"
    );
    // The object routes renew too: they refuse the same attempt.
    let source = format!("inputs/{id}/source");
    let r = pair
        .aws
        .client
        .get(format!("{base}/objects/{source}?worker=test-w&attempt=1"))
        .bearer_auth(&pair.tokens.peer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    // Home runs it (a new attempt) and the job succeeds.
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(60));
    assert_eq!(job.tasks[0].ran_on.as_deref(), Some("aws"));
    assert_eq!(job.tasks[0].attempts, 2);
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
    let pair = start(dir.path(), Setup::new(false, Link::Direct));
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
        for t in [&pair.tokens.user, &pair.tokens.admin] {
            let r = send(&m, &path, Some(t), body.clone());
            assert_eq!(r.status(), 403, "{m} {path}");
        }
        let r = send(&m, &path, Some(&pair.tokens.peer), body.clone());
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
            Some(&pair.tokens.peer),
            body.clone()
        )
        .status(),
        403
    );

    // A real claim, made by this test as the peer.
    let (stalled, id, input) = job_waiting_at_home(&pair, "160x120", 1);
    let claim = |worker: &str| pair.peer_claim(worker, None);
    let task: serde_json::Value =
        wait_until("a task for the peer", Duration::from_secs(10), || {
            let r = claim("test-w");
            (r.status() == 200).then(|| r.json().unwrap())
        });
    let task_id = task["task_id"].as_str().unwrap().to_string();
    assert_eq!(task_id, format!("{id}.transcode"));
    assert_eq!(task["attempt"], 1);
    let prefix = task["output_prefix"].as_str().unwrap().to_string();
    // The attempt's prefix is the peer's own, beside the one home's attempt 1 would use.
    let home_prefix = format!("outputs/{id}/a1");
    assert!(prefix.starts_with(&format!("{home_prefix}-p")), "{prefix}");
    let source = format!("inputs/{id}/source");
    assert!(task["inputs"].to_string().contains(&source), "{task}");
    assert_eq!(
        pair.job(&pair.aws, &id).tasks[0].ran_on.as_deref(),
        Some("gcp")
    );

    let t = format!("/v1/peer/tasks/{task_id}");
    let q = "?worker=test-w&attempt=1";
    let get = |key: &str, query: &str| {
        send(
            &reqwest::Method::GET,
            &format!("{t}/objects/{key}{query}"),
            Some(&pair.tokens.peer),
            body.clone(),
        )
    };
    let put = |key: &str, query: &str| {
        send(
            &reqwest::Method::PUT,
            &format!("{t}/objects/{key}{query}"),
            Some(&pair.tokens.peer),
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
    assert_eq!(put(&format!("{home_prefix}/x.mp4"), q).status(), 403);
    assert_eq!(put(&format!("inputs/{id}/source"), q).status(), 403);
    assert_eq!(put(&format!("{prefix}/../a2/x.mp4"), q).status(), 403);
    // A completion may not name files outside the attempt.
    let r = send(
        &reqwest::Method::POST,
        &format!("{t}/complete"),
        Some(&pair.tokens.peer),
        serde_json::json!({"worker": "test-w", "attempt": 1, "outputs": [
            {"name": "x.mp4", "key": format!("inputs/{stalled}/source"), "size": 1,
             "content_type": "video/mp4"}]}),
    );
    assert_eq!(r.status(), 422);
    // An upload still streaming when the attempt lets go of the task is not committed: the
    // body's first byte passes the lease check, the release comes, then the body ends.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let late_key = format!("{prefix}/late.mp4");
    let late = {
        let url = format!("{base}{t}/objects/{late_key}{q}");
        let token = pair.tokens.peer.clone();
        std::thread::spawn(move || {
            let body = SlowBody { first: true, wait };
            http()
                .put(url)
                .bearer_auth(token)
                .body(reqwest::blocking::Body::new(body))
                .send()
                .map(|r| r.status().as_u16())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Released: back home, its files gone, and never offered to a peer again.
    let r = send(
        &reqwest::Method::POST,
        &format!("{t}/release"),
        Some(&pair.tokens.peer),
        serde_json::json!({"worker": "test-w", "attempt": 1}),
    );
    assert_eq!(r.status(), 204);
    assert!(!dir
        .path()
        .join(format!("aws/storage/{prefix}/x.mp4"))
        .exists());
    assert_eq!(pair.job(&pair.aws, &id).tasks[0].status, "queued");
    go.send(()).unwrap();
    assert_eq!(
        late.join().unwrap().unwrap(),
        409,
        "an upload outlived its lease"
    );
    assert!(!dir.path().join(format!("aws/storage/{late_key}")).exists());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(claim("test-w").status(), 204, "a task moved twice");
    pair.cancel(&pair.aws, &stalled);
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(60));
    assert_eq!(job.tasks[0].ran_on.as_deref(), Some("aws"));
    // The release handed the attempt number back, so home ran attempt 1 too, under its own
    // prefix: not the one the peer held, where the peer's presigned URLs (valid up to a lease
    // after it let go) still point. A late completion of that attempt (a stale peer, or one
    // that names any task) is refused and deletes nothing.
    let stored = || {
        let mut f = files_under(&dir.path().join(format!("aws/storage/{home_prefix}")));
        f.sort();
        f
    };
    let home_files = stored();
    assert!(!home_files.is_empty(), "home's attempt 1 stored no file");
    assert!(
        files_under(&dir.path().join(format!("aws/storage/{prefix}"))).is_empty(),
        "home's attempt wrote where the released peer's URLs point"
    );
    let r = send(
        &reqwest::Method::POST,
        &format!("{t}/complete"),
        Some(&pair.tokens.peer),
        serde_json::json!({"worker": "test-w", "attempt": 1, "outputs": []}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["outcome"],
        "lease_lost"
    );
    assert_eq!(
        stored(),
        home_files,
        "a refused completion deleted the finished job's outputs"
    );
    let out = &pair.job(&pair.aws, &id).outputs[0];
    assert_eq!(pair.download(&pair.aws, &out.url).status(), 200);
}

#[test]
fn with_s3_at_the_owner_the_peer_moves_files_through_presigned_urls() {
    the_peer_fills_the_owners_bucket(true);
}

/// `[steal] presign = false` (compose: the bucket's address is private to its cloud): the same
/// job, every byte through the owner's `…/objects/` routes, into the same bucket.
#[test]
fn with_presign_off_the_peer_moves_files_through_the_owners_api() {
    the_peer_fills_the_owners_bucket(false);
}

/// aws stores in S3 and its one slot is busy; gcp takes the waiting job and its outputs land
/// in aws's bucket, through presigned URLs when `presign`, else through aws's object routes.
fn the_peer_fills_the_owners_bucket(presign: bool) {
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
    let pair = start(
        dir.path(),
        Setup {
            aws_s3: Some(endpoint),
            aws_presign: presign,
            ..Setup::new(true, Link::Direct)
        },
    );
    let (stalled, id, _) = job_waiting_at_home(&pair, "320x240", 2);
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(90));
    assert_eq!(
        job.tasks[0].ran_on.as_deref(),
        Some("gcp"),
        "{:?}",
        job.tasks
    );
    // The outputs are in aws's bucket, and the bytes went through aws's object routes exactly
    // when it handed out no URL.
    let in_bucket = files_under(&dir.path().join(format!("s3/media/reelay/outputs/{id}")));
    assert!(!in_bucket.is_empty(), "no outputs in aws's bucket");
    assert!(files_under(&dir.path().join("gcp/storage/outputs")).is_empty());
    let metrics = pair.metrics(&pair.aws);
    assert!(
        metrics.contains("reelay_peer_tasks_total{event=\"completed\"} 1"),
        "{metrics}"
    );
    let through_api = metrics
        .lines()
        .any(|l| l.contains("objects/{*key}") && l.starts_with("reelay_http_requests_total"));
    assert_eq!(
        through_api, !presign,
        "presign = {presign}, yet the files went through the api: {through_api}"
    );
    let out = &job.outputs[0];
    let body = pair.download(&pair.aws, &out.url);
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().unwrap().len() as u64, out.size);
    pair.cancel(&pair.aws, &stalled);
}

/// What [`key_input_job`] made.
struct KeyInputJob {
    pair: Stack,
    /// The job holding aws's one slot.
    stalled: String,
    /// The clip as generated, and where it lies in aws's storage.
    clip: PathBuf,
    stored: PathBuf,
    id: String,
}

/// aws (key prefix `incoming`; gcp too when `gcp`) with its one slot held, and a job whose
/// input is `incoming/team/{name}`, an object put where an operator's pipeline drops it (under
/// the user token's owner, "team"), waiting at home. `"split": "off"`: under "auto" the first
/// task probes a key input and decides the split, at home; "off" decides now, so it may move.
fn key_input_job(dir: &Path, gcp: bool, name: &str, size: &str, secs: u32) -> KeyInputJob {
    let pair = start(
        dir,
        Setup {
            aws_key_prefix: Some("incoming"),
            ..Setup::new(gcp, Link::Direct)
        },
    );
    let stalled = pair.occupy(&pair.aws);
    let clip = common::clip(&pair.dir, name, size, secs, true);
    let stored = dir.join(format!("aws/storage/incoming/team/{name}"));
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    std::fs::copy(&clip, &stored).unwrap();
    let r = pair
        .aws
        .client
        .post(format!("{}/v1/jobs", pair.aws.base))
        .bearer_auth(&pair.tokens.user)
        .json(&serde_json::json!({
            "input": {"key": format!("incoming/team/{name}")},
            "outputs": [{"preset": "mp4-360p"}],
            "split": "off"
        }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let id = r.json::<JobView>().unwrap().id;
    KeyInputJob {
        pair,
        stalled,
        clip,
        stored,
        id,
    }
}

/// A key input (an object already in aws's storage, under aws's key prefix) moves like an
/// upload: gcp, which has no key prefix, reads it through aws's object route under the job's
/// own source name, never where it lies; the object stays in aws's storage, unchanged. (With
/// `"split": "auto"` the job's first task, which probes the input and decides the split, stays
/// home; a long input's pieces then move as any split job's do.)
#[test]
fn a_key_input_moves_like_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let KeyInputJob {
        pair,
        stalled,
        clip,
        stored,
        id,
    } = key_input_job(dir.path(), true, "keyed.mp4", "320x240", 2);
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(90));
    assert_eq!(
        job.tasks[0].ran_on.as_deref(),
        Some("gcp"),
        "{:?}",
        job.tasks
    );
    let metrics = pair.metrics(&pair.aws);
    assert!(
        metrics.contains("reelay_peer_tasks_total{event=\"completed\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(&clip).unwrap()
    );
    assert!(files_under(&dir.path().join("gcp/storage/outputs")).is_empty());
    let out = &job.outputs[0];
    let body = pair.download(&pair.aws, &out.url);
    assert_eq!(body.status(), 200);
    let bytes = body.bytes().unwrap();
    assert_eq!(bytes.len() as u64, out.size);
    let mp4 = dir.path().join("keyed-out.mp4");
    std::fs::write(&mp4, &bytes).unwrap();
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&mp4)
        .output()
        .unwrap();
    let duration: f64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!((duration - 2.0).abs() < 0.1, "{duration}");
    pair.cancel(&pair.aws, &stalled);
}

/// A key input that is gone by the time a peer asks keeps its task home for good: the peer
/// gets nothing (204), the task is never offered again, and the home worker fails the job
/// with `input_not_found`, as for any job whose input vanished.
#[test]
fn a_key_input_gone_before_the_claim_keeps_its_task_home() {
    let dir = tempfile::tempdir().unwrap();
    let KeyInputJob {
        pair,
        stalled,
        stored,
        id,
        ..
    } = key_input_job(dir.path(), false, "gone.mp4", "160x120", 1);
    std::fs::remove_file(&stored).unwrap();
    std::thread::sleep(Duration::from_millis(800)); // past offer_after_seconds (0.5 s)
    let claim = |worker: &str| pair.peer_claim(worker, None);
    assert_eq!(claim("w1").status(), 204, "a gone key input was handed out");
    assert_eq!(
        claim("w2").status(),
        204,
        "a task kept home was offered again"
    );
    let metrics = pair.metrics(&pair.aws);
    assert_eq!(
        sample(&metrics, "reelay_peer_tasks_total{event=\"claimed\"}"),
        0.0,
        "{metrics}"
    );
    pair.cancel(&pair.aws, &stalled);
    let job = pair.wait_status(&pair.aws, &id, "failed", Duration::from_secs(60));
    assert_eq!(
        job.error.as_ref().map(|e| e.code.as_str()),
        Some("input_not_found"),
        "{:?}",
        job.error
    );
    assert_eq!(
        job.tasks[0].ran_on.as_deref(),
        Some("aws"),
        "{:?}",
        job.tasks
    );
}

/// The edge's own JSON refusal: its status and message (the cluster's would differ).
fn refusal(r: reqwest::blocking::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().unwrap_or_default();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Through the edge, every remote-claim route refuses a request without the peer credential
/// itself (its JSON 401/403, before aws sees it), passes a peer token to aws, names no cluster
/// but the one in the path, and says 503 (never another cluster) when that one is down.
#[test]
fn through_the_edge_the_remote_claim_needs_the_peer_credential() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start(dir.path(), Setup::new(false, Link::Edge));
    let c = http();
    let edge = pair.edge().base();
    let send = |m: &reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = c.request(m.clone(), format!("{edge}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if *m == reqwest::Method::PUT {
            r = r.body("x");
        } else if *m == reqwest::Method::POST {
            r = r.json(
                &serde_json::json!({"worker": "w", "attempt": 1, "outputs": [],
                "error": {"code": "x", "message": "y"}, "key": "outputs/aws.x/a1/o.mp4"}),
            );
        }
        r.send().unwrap()
    };
    for (m, path) in routes("aws.x.transcode") {
        let path = format!("/clusters/aws{path}");
        let (status, code, _) = refusal(send(&m, &path, None));
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{m} {path}");
        for t in [&pair.tokens.user, &pair.tokens.admin] {
            let (status, code, message) = refusal(send(&m, &path, Some(t)));
            assert_eq!((status, code.as_str()), (403, "forbidden"), "{m} {path}");
            assert!(
                message.contains("lacks the peer scope"),
                "not the edge's refusal: {message}"
            );
        }
        let r = send(&m, &path, Some(&pair.tokens.peer));
        assert!(
            ![401, 403].contains(&r.status().as_u16()) && r.status().as_u16() < 500,
            "{m} {path} with the peer token: {}",
            r.status()
        );
    }
    // The refusals never reached aws: only the peer token's requests did.
    let metrics = pair.metrics(&pair.aws);
    let reached: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("reelay_http_requests_total") && l.contains("/v1/peer/"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(reached, routes("x").len() as f64, "{metrics}");
    // Through the edge a peer token is nothing else either.
    let r = send(&reqwest::Method::GET, "/v1/jobs", Some(&pair.tokens.peer));
    assert_eq!(r.status(), 403);
    // Only the cluster the path names, and only under /clusters/.
    let (status, code, _) = refusal(send(
        &reqwest::Method::POST,
        "/clusters/azure/v1/peer/tasks/claim",
        Some(&pair.tokens.peer),
    ));
    assert_eq!((status, code.as_str()), (404, "unknown_cluster"));
    let (status, code, _) = refusal(send(
        &reqwest::Method::POST,
        "/v1/peer/tasks/claim",
        Some(&pair.tokens.peer),
    ));
    assert_eq!((status, code.as_str()), (404, "not_found"));

    // aws goes away: the edge's 503 at once (the connection is refused), and still once the
    // health checks see it (with aws the only cluster the edge fails open, so that is the
    // refused connection again; the `down` rendering is covered in render.rs).
    let claim = || {
        refusal(send(
            &reqwest::Method::POST,
            "/clusters/aws/v1/peer/tasks/claim",
            Some(&pair.tokens.peer),
        ))
    };
    pair.aws.signal("-KILL");
    let (status, code, message) = claim();
    assert_eq!((status, code.as_str()), (503, "cluster_unavailable"));
    assert!(message.contains("cluster aws"), "{message}");
    pair.edge().wait_health(
        "aws",
        reelay_edge::health::Health::Down,
        Duration::from_secs(10),
    );
    let (status, code, _) = claim();
    assert_eq!((status, code.as_str()), (503, "cluster_unavailable"));
}

/// Every pid of the edge's nginx (master and workers).
fn nginx_pids(edge: &Edge) -> Vec<u32> {
    let master = edge.nginx_pid().expect("nginx runs");
    let mut pids = vec![master];
    pids.extend(descendants(master).into_iter().map(|(p, _)| p));
    pids
}

/// The edge link cut mid-task: gcp runs aws's task through the edge, then the edge stops
/// answering (its nginx stopped with SIGSTOP: connections are still accepted, nothing answers),
/// so gcp can neither renew nor complete. aws's lease expires and the task runs at home, once;
/// when the link comes back, gcp's late attempt is refused (lease lost), leaves no file, and is
/// not tried again.
#[test]
fn the_edge_link_cut_mid_task_sends_the_task_home_once() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start(dir.path(), Setup::new(true, Link::Edge));
    // Long enough to be caught encoding on a 2-core machine.
    let (stalled, id, _) = job_waiting_at_home(&pair, "1280x720", 30);
    let task_id = format!("{id}.transcode");
    wait_until("gcp to run aws's task", Duration::from_secs(60), || {
        let j = pair.job(&pair.aws, &id);
        let t = &j.tasks[0];
        (t.status == "running" && t.ran_on.as_deref() == Some("gcp") && t.progress > 0.0)
            .then_some(())
    });
    let nginx = nginx_pids(pair.edge());
    for pid in &nginx {
        kill(*pid, "-STOP");
    }
    let cut = std::time::Instant::now();

    // aws's 2 s lease runs out; its slot frees and takes the task back.
    pair.cancel(&pair.aws, &stalled);
    wait_until("the task to run at home", Duration::from_secs(30), || {
        let t = &pair.job(&pair.aws, &id).tasks[0];
        (t.status == "running" && t.ran_on.as_deref() == Some("aws")).then_some(())
    });
    let home = cut.elapsed();
    assert_eq!(pair.job(&pair.aws, &id).tasks[0].attempts, 2);

    // The link comes back while the home attempt runs.
    for pid in &nginx {
        kill(*pid, "-CONT");
    }
    let job = pair.wait_status(&pair.aws, &id, "succeeded", Duration::from_secs(180));
    eprintln!(
        "edge link cut: the task ran at home {:.2} s after the cut, succeeded {:.2} s after it",
        home.as_secs_f64(),
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(job.tasks[0].ran_on.as_deref(), Some("aws"));
    assert_eq!(job.tasks[0].attempts, 2, "{:?}", job.tasks);
    assert!(job.outputs.iter().all(|o| o.url.contains(&id)));
    let finished = files_under(&dir.path().join(format!("aws/storage/outputs/{id}")));
    assert!(!finished.is_empty());
    assert!(
        finished
            .iter()
            .all(|f| f.to_string_lossy().contains("/a2/")),
        "files of the cut-off attempt left: {finished:?}"
    );

    // gcp gave the attempt up: stopped on a refused renewal (lease lost), or a refused or
    // failed completion; it never completed, and its staging is gone.
    let gcp_metrics = || pair.metrics(pair.gcp());
    wait_until(
        "gcp to give the attempt up",
        Duration::from_secs(30),
        || {
            let m = gcp_metrics();
            let ended: f64 = ["stopped", "lease_lost", "error"]
                .iter()
                .map(|o| sample(&m, &format!("reelay_remote_tasks_total{{outcome=\"{o}\"}}")))
                .sum();
            (ended == 1.0).then_some(())
        },
    );
    let m = gcp_metrics();
    eprintln!(
        "edge link cut: gcp's attempt ended as {:?}",
        m.lines()
            .filter(|l| l.starts_with("reelay_remote_tasks_total{") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sample(&m, "reelay_remote_tasks_total{outcome=\"completed\"}"),
        0.0,
        "{m}"
    );
    assert!(files_under(&dir.path().join("gcp/peer")).is_empty());
    let aws = pair.metrics(&pair.aws);
    assert_eq!(
        sample(&aws, "reelay_peer_tasks_total{event=\"completed\"}"),
        0.0,
        "{aws}"
    );

    // A late completion of the cut-off attempt, through the edge, is refused: lease lost.
    let late = http()
        .post(format!(
            "{}/clusters/aws/v1/peer/tasks/{task_id}/complete",
            pair.edge().base()
        ))
        .bearer_auth(&pair.tokens.peer)
        .json(&serde_json::json!({"worker": "late", "attempt": 1, "outputs": []}))
        .send()
        .unwrap();
    assert_eq!(late.status(), 200);
    assert_eq!(
        late.json::<serde_json::Value>().unwrap()["outcome"],
        "lease_lost"
    );
    assert_eq!(pair.job(&pair.aws, &id).status.as_str(), "succeeded");

    // And gcp does not keep trying: no request about the task reaches the edge any more.
    let about_task = || {
        edge_requests(pair.edge())
            .iter()
            .filter(|(_, u, _)| u.contains(&format!("/tasks/{task_id}/")))
            .count()
    };
    let before = about_task();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(about_task(), before, "gcp still works on the lost attempt");
}

/// `reelay up` with `steal = true`: each cluster gets a peer token and `[steal]` peers at the
/// edge's `/clusters/{other}`, so gcp's idle worker runs a task that waited at aws, through the
/// edge, with nothing configured by hand.
#[test]
fn reelay_up_with_steal_lets_gcp_take_a_waiting_aws_task_through_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let ports = common::UpPorts::free();
    // The stall server is on loopback.
    let private = "args = [\"--allow-private-urls\"]";
    let topology = format!(
        "steal = true\n{}",
        ports.topology((1, 1), (1, 1), private, "")
    );
    let up = common::Up::start(dir.path(), ports, &topology, 0);
    let admin = std::fs::read_to_string(up.state.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    for name in ["aws", "gcp"] {
        let config = std::fs::read_to_string(up.state.join(format!("{name}.steal.toml"))).unwrap();
        let other = if name == "aws" { "gcp" } else { "aws" };
        assert!(
            config.contains(&format!("url = \"{}/clusters/{other}\"", up.edge)),
            "{config}"
        );
    }
    // aws's only slot is held; the next aws job waits there (offered after 5 s, the default).
    let c = http();
    let submit = |input: serde_json::Value| {
        let r = c
            .post(format!("{}/v1/jobs", up.aws))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"input": input, "outputs": [{"preset": "mp4-360p"}]}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<JobView>().unwrap().id
    };
    let stalled = submit(serde_json::json!({"url": stall_server()}));
    let job = |id: &str| -> JobView {
        c.get(format!("{}/v1/jobs/{id}", up.aws))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    wait_until(
        "the stalled job to hold aws's slot",
        Duration::from_secs(20),
        || (job(&stalled).status.as_str() == "running").then_some(()),
    );
    let input = common::clip(dir.path(), "clip.mp4", "320x240", 2, true);
    let input = input.display().to_string();
    let out = common::reelay(
        &up.aws,
        Some(&admin),
        &["submit", &input, "--preset", "mp4-360p", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = serde_json::from_slice::<JobView>(&out.stdout).unwrap().id;
    let done = wait_until(
        "the waiting job to succeed",
        Duration::from_secs(90),
        || {
            let j = job(&id);
            assert_ne!(j.status.as_str(), "failed", "{:?}", j.error);
            (j.status.as_str() == "succeeded").then_some(j)
        },
    );
    assert_eq!(
        done.tasks[0].ran_on.as_deref(),
        Some("gcp"),
        "{:?}",
        done.tasks
    );
    let log = std::fs::read_to_string(up.state.join("edge/logs/access.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "/clusters/aws/v1/peer/tasks/{id}.transcode/complete"
        )) && l.contains("\"status\":200")),
        "the completion did not go through the edge"
    );
    let r = c
        .post(format!("{}/v1/jobs/{stalled}/cancel", up.aws))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert!(r.status().is_success());
}
