//! One identity across clouds, end to end: `reelay up` (two `reelay serve` clusters and a real
//! `reelay edge` with nginx, all real processes on loopback) in its default protected mode.
//!
//! One token, created through the edge with the admin token `reelay up` wrote, submits jobs that
//! land on both clouds, lists them, downloads an output and cancels through the edge; the same
//! token works on each cluster directly. Revoked through the edge, it is refused everywhere
//! (measured); keys are rotated by editing the files (old and new tokens valid during the
//! overlap, old ones refused after).

use reelay_identity::keys::load_trusted_keys;
use reelay_identity::token::verify;
use reelay_protocol::{JobList, JobView};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{free_port, http, reelay, stall_server, wait_until, Guard, Stop, Up, UpPorts, BIN};

fn clip(dir: &Path) -> PathBuf {
    common::clip(dir, "clip.mp4", "160x120", 1, false)
}

/// Stops a child with SIGTERM (an edge then stops its nginx too) and reaps it.
fn guard(child: Child) -> Guard {
    Guard::new(child, Stop::Term(Duration::from_secs(10)))
}

/// `reelay up` with two one-worker clusters (private URLs allowed, 2 s leases) and quick
/// health checks, in its default protected mode.
fn up(dir: &Path) -> Up {
    let ports = UpPorts::free();
    let topology = ports.topology(
        (1, 1),
        (1, 1),
        r#"args = ["--allow-private-urls", "--lease-seconds", "2"]"#,
        "reload_min_interval_ms = 200",
    );
    Up::start(dir, ports, &topology, 0)
}

/// Runs the CLI against `server` with `token`; returns stdout, panics with stderr on failure.
fn cli(server: &str, token: &str, args: &[&str]) -> String {
    let out = reelay(server, Some(token), args);
    assert!(
        out.status.success(),
        "reelay {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn status(client: &reqwest::blocking::Client, url: &str, token: Option<&str>) -> u16 {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().map(|r| r.status().as_u16()).unwrap_or(0)
}

fn token_id(up: &Up, token: &str) -> String {
    let trusted = load_trusted_keys(&up.state.join("identity/trusted.keys")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    verify(token, &trusted, &Default::default(), now)
        .unwrap()
        .jti
}

/// Polls until `token` is refused (401) at every one of `bases`; returns how long it took.
fn refused_everywhere(client: &reqwest::blocking::Client, bases: &[&str], token: &str) -> Duration {
    let t0 = Instant::now();
    wait_until(
        "the token to be refused everywhere",
        Duration::from_secs(20),
        || {
            bases
                .iter()
                .all(|b| status(client, &format!("{b}/v1/presets"), Some(token)) == 401)
                .then_some(())
        },
    );
    t0.elapsed()
}

#[test]
fn one_token_works_on_every_cloud_through_the_edge_and_revocation_reaches_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path());
    let client = http();
    let everywhere = [up.edge.as_str(), up.aws.as_str(), up.gcp.as_str()];
    let admin = std::fs::read_to_string(up.state.join("admin.token")).unwrap();
    let admin = admin.trim();

    // Nothing anonymous, anywhere.
    for b in everywhere {
        assert_eq!(status(&client, &format!("{b}/v1/jobs"), None), 401, "{b}");
    }

    // A token created through the edge with the admin token.
    let token = cli(
        &up.edge,
        admin,
        &[
            "token", "create", "--scope", "submit", "--scope", "read", "--owner", "team-a",
        ],
    );
    let token = token.trim().to_string();
    assert!(token.starts_with("rly2."), "{token}");

    // The owner's webhook secret is one secret: the same from every cloud and through the edge
    // (each cluster of `reelay up` reads one shared notify key), so a receiver verifies the
    // deliveries of jobs on either cloud with what any of them answered. Another owner's
    // differs.
    let secret = |base: &str, t: &str| -> String {
        let r = client
            .get(format!("{base}/v1/webhooks/secret"))
            .bearer_auth(t)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{base}");
        r.json::<serde_json::Value>().unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let team_a = secret(&up.aws, &token);
    assert!(team_a.starts_with("whsec_"), "{team_a}");
    for b in everywhere {
        assert_eq!(secret(b, &token), team_a, "{b}");
    }
    assert_ne!(secret(&up.gcp, admin), team_a);

    // Submissions through the edge land on both clouds, all accepted (before the issue: 202 or
    // 401 depending on the cloud the edge picked).
    let stall = stall_server();
    let spec = serde_json::json!({"input": {"url": stall}, "outputs": [{"preset": "mp4-360p"}]});
    let mut ids = Vec::new();
    for _ in 0..6 {
        let r = client
            .post(format!("{}/v1/jobs", up.edge))
            .bearer_auth(&token)
            .json(&spec)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
        ids.push(r.json::<JobView>().unwrap().id);
    }
    for cloud in ["aws.", "gcp."] {
        assert!(
            ids.iter().any(|i| i.starts_with(cloud)),
            "no job on {cloud}: {ids:?}"
        );
    }
    // The same token works on each cluster directly.
    for b in [&up.aws, &up.gcp] {
        assert_eq!(status(&client, &format!("{b}/v1/jobs"), Some(&token)), 200);
    }

    // `reelay list` through the edge: every job of the owner, from both clouds (was a 401).
    let listed: JobList =
        serde_json::from_str(&cli(&up.edge, &token, &["list", "--json"])).unwrap();
    for id in &ids {
        assert!(
            listed.jobs.iter().any(|j| &j.id == id),
            "{id} missing from the list"
        );
    }
    // Another owner sees none of them, on any cluster.
    let other = cli(
        &up.edge,
        admin,
        &["token", "create", "--scope", "read", "--owner", "team-b"],
    );
    let listed: JobList =
        serde_json::from_str(&cli(&up.edge, other.trim(), &["list", "--json"])).unwrap();
    assert!(listed.jobs.is_empty(), "{:?}", listed.jobs);

    // Cancel through the edge, on both clouds (all of them, which also frees the workers).
    for id in &ids {
        cli(&up.edge, &token, &["cancel", id]);
    }

    // A real encode, followed and downloaded through the edge.
    let input = clip(dir.path());
    let out = cli(
        &up.edge,
        &token,
        &[
            "submit",
            input.to_str().unwrap(),
            "--preset",
            "mp4-360p",
            "--wait",
            "--json",
        ],
    );
    let job: JobView = serde_json::from_str(&out).unwrap();
    let to = dir.path().join("out");
    cli(
        &up.edge,
        &token,
        &["download", &job.id, "--to", to.to_str().unwrap()],
    );
    let files: Vec<_> = std::fs::read_dir(&to).unwrap().flatten().collect();
    assert!(!files.is_empty(), "nothing downloaded");

    // Revoked through the edge: refused by the edge and both clusters within 10 s.
    let id = token_id(&up, &token);
    let t0 = Instant::now();
    Command::new(BIN)
        .args(["token", "revoke", &id])
        .env("REELAY_SERVER", &up.edge)
        .env("REELAY_TOKEN", admin)
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("revoke");
    refused_everywhere(&client, &everywhere, &token);
    let took = t0.elapsed();
    eprintln!("revocation: refused by the edge and both clusters {took:?} after `reelay token revoke` started");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The revoked token's message says why.
    let r = client
        .get(format!("{}/v1/presets", up.edge))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_refused_as_revoked(r, "");
}

/// A 401 whose message says the token was revoked.
fn assert_refused_as_revoked(r: reqwest::blocking::Response, context: &str) {
    assert_eq!(r.status(), 401, "{context}");
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{context}: {body}"
    );
}

#[test]
fn keys_rotate_without_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path());
    let client = http();
    let everywhere = [up.edge.as_str(), up.aws.as_str(), up.gcp.as_str()];
    let admin = std::fs::read_to_string(up.state.join("admin.token")).unwrap();
    let old = cli(
        &up.edge,
        admin.trim(),
        &[
            "token", "create", "--scope", "read", "--scope", "submit", "--owner", "ci",
        ],
    );
    let old = old.trim().to_string();

    // A new key, trusted everywhere alongside the old one, then used by the issuers.
    let k2 = up.state.join("identity/k2.key");
    let line = Command::new(BIN)
        .args(["token", "keygen", "--id", "k2", "--out"])
        .arg(&k2)
        .output()
        .unwrap();
    assert!(line.status.success());
    let line = String::from_utf8(line.stdout).unwrap();
    let trusted = up.state.join("identity/trusted.keys");
    let before = std::fs::read_to_string(&trusted).unwrap();
    std::fs::write(&trusted, format!("{before}{line}")).unwrap();
    std::fs::copy(&k2, up.state.join("identity/issuer.key")).unwrap();
    // Each cluster reloads the issuer key on its own clock: ask each one directly, so the
    // tokens made below through the edge are signed with k2 whichever cluster answers.
    let signs_with_k2 = |cluster: &str| {
        wait_until(
            "the cluster to sign with k2",
            Duration::from_secs(10),
            || {
                let out = Command::new(BIN)
                    .args(["token", "create", "--scope", "admin", "--owner", "ops"])
                    .env("REELAY_SERVER", cluster)
                    .env("REELAY_TOKEN", admin.trim())
                    .output()
                    .ok()?;
                let t = String::from_utf8(out.stdout).ok()?.trim().to_string();
                let keys = load_trusted_keys(&trusted).ok()?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                let c = verify(&t, &keys, &Default::default(), now).ok()?;
                (c.kid == "k2").then_some(t)
            },
        )
    };
    let new_admin = signs_with_k2(&up.aws);
    signs_with_k2(&up.gcp);
    // The edge and every cluster pick the new key up within a second too. One cluster signing
    // with k2 says nothing about the other having reloaded its trusted keys yet, so wait for
    // each of them: a `token create` through the edge may land on either.
    wait_until("every service to trust k2", Duration::from_secs(10), || {
        everywhere
            .iter()
            .all(|b| status(&client, &format!("{b}/v1/presets"), Some(&new_admin)) == 200)
            .then_some(())
    });
    let new = cli(
        &up.edge,
        &new_admin,
        &[
            "token", "create", "--scope", "read", "--scope", "submit", "--owner", "ci",
        ],
    );
    let new = new.trim().to_string();
    // Overlap: old and new tokens work everywhere.
    for b in everywhere {
        for t in [&old, &new] {
            assert_eq!(
                status(&client, &format!("{b}/v1/presets"), Some(t)),
                200,
                "{b}"
            );
        }
    }
    // The old key retired: its tokens are refused everywhere, the new ones keep working.
    let t0 = Instant::now();
    std::fs::write(&trusted, &line).unwrap();
    let took = refused_everywhere(&client, &everywhere, &old);
    eprintln!(
        "old-key token refused everywhere {:?} after the key was retired",
        t0.elapsed()
    );
    assert!(took < Duration::from_secs(10));
    for b in everywhere {
        assert_eq!(
            status(&client, &format!("{b}/v1/presets"), Some(&new)),
            200,
            "{b}"
        );
    }
}

fn serve(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Child {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster",
            name,
        ])
        .args(["--workers", "1", "--allow-private-urls"])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");
    wait_until("cluster ready", Duration::from_secs(30), || {
        (status(&http(), &url, None) == 200).then_some(())
    });
    child
}

fn edge_toml(dir: &Path, port: u16, control: u16, cluster: u16, auth: Option<&Path>) -> PathBuf {
    let mut t = format!(
        "listen = \"127.0.0.1:{port}\"\ncontrol_listen = \"127.0.0.1:{control}\"\nwork_dir = \"{}\"\n",
        dir.join("work").display()
    );
    if let Some(keys) = auth {
        t.push_str(&format!("[auth]\ntrusted_keys = \"{}\"\n", keys.display()));
    }
    t.push_str(&format!(
        "[health]\ninterval_ms = 500\n[[clusters]]\nname = \"aws\"\nurl = \"http://127.0.0.1:{cluster}\"\n"
    ));
    let path = dir.join("edge.toml");
    std::fs::write(&path, t).unwrap();
    path
}

fn edge(config: &Path, port: u16) -> Child {
    let child = Command::new(BIN)
        .args(["edge", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/edge/status");
    wait_until("edge up", Duration::from_secs(30), || {
        let s: reelay_edge::EdgeStatus = http().get(&url).send().ok()?.json().ok()?;
        s.clusters
            .iter()
            .all(|c| c.health == reelay_edge::health::Health::Up)
            .then_some(())
    });
    child
}

fn post_job(client: &reqwest::blocking::Client, base: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({"input": {"url": "http://127.0.0.1:9/x.mp4"}, "outputs": [{"preset": "mp4-360p"}]}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

/// Finding 2: a loopback cluster behind an edge on the same host served anonymous requests
/// from anywhere, and nothing warned about an edge beyond loopback without auth. Now the cluster
/// refuses forwarded anonymous requests, `--check-config` warns, and an edge with `[auth]`
/// refuses anonymous requests in nginx itself, even with its controller dead, while valid tokens
/// still get through (the cluster checks them alone then).
#[test]
fn an_edge_never_forwards_anonymous_requests_and_clusters_never_treat_them_as_local() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let client = http();
    let mut procs: Vec<Guard> = Vec::new();

    // A keyless loopback cluster behind an edge without [auth].
    let (c1, e1, k1) = (free_port(), free_port(), free_port());
    procs.push(guard(serve(d, "plain", c1, &[])));
    let plain_dir = d.join("edge-plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let cfg = edge_toml(&plain_dir, e1, k1, c1, None);
    procs.push(guard(edge(&cfg, e1)).with_nginx(plain_dir.join("work/nginx.pid")));
    let (st, body) = post_job(&client, &format!("http://127.0.0.1:{e1}"), None);
    assert_eq!(st, 401, "anonymous through the edge: {body}");
    let (st, body) = post_job(&client, &format!("http://127.0.0.1:{c1}"), None);
    assert_eq!(st, 202, "a direct loopback client keeps open mode: {body}");
    // The merged list is fetched by the edge's controller, not nginx: still forwarded.
    let r = client
        .get(format!("http://127.0.0.1:{e1}/v1/jobs"))
        .send()
        .unwrap();
    let (st, body) = (r.status().as_u16(), r.text().unwrap());
    assert_eq!(st, 401, "anonymous list through the edge: {body}");

    // An edge configured beyond loopback without [auth] says so.
    let wide = d.join("wide.toml");
    std::fs::write(
        &wide,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&format!("127.0.0.1:{e1}"), "0.0.0.0:18099"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["edge", "--check-config", "--config"])
        .arg(&wide)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("WARNING") && text.contains("without [auth]"),
        "{text}"
    );

    // Keys; a cluster that trusts them; an edge with [auth].
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let line = Command::new(BIN)
        .args(["token", "keygen", "--id", "k1", "--out"])
        .arg(keys.join("issuer.key"))
        .output()
        .unwrap();
    std::fs::write(keys.join("trusted.keys"), &line.stdout).unwrap();
    let issuer = keys.join("issuer.key");
    let trusted = keys.join("trusted.keys");
    let (c2, e2, k2) = (free_port(), free_port(), free_port());
    procs.push(guard(serve(
        d,
        "aws",
        c2,
        &[
            "--issuer-key",
            issuer.to_str().unwrap(),
            "--trusted-keys",
            trusted.to_str().unwrap(),
        ],
    )));
    let auth_dir = d.join("edge-auth");
    std::fs::create_dir_all(&auth_dir).unwrap();
    let cfg = edge_toml(&auth_dir, e2, k2, c2, Some(&trusted));
    let mut controller = guard(edge(&cfg, e2)).with_nginx(auth_dir.join("work/nginx.pid"));
    let base = format!("http://127.0.0.1:{e2}");
    let token = Command::new(BIN)
        .args([
            "token",
            "create",
            "--scope",
            "read",
            "--scope",
            "submit",
            "--issuer-key",
        ])
        .arg(&issuer)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let forger = reelay_identity::SigningKey::from_seed("k1", &[9u8; 32]).unwrap();
    let forged = reelay_identity::token::issue(
        &forger,
        &reelay_identity::token::NewClaims {
            owner: Some("x".into()),
            scopes: vec![reelay_identity::Scope::Admin],
            name: String::new(),
            ttl_seconds: None,
        },
        1,
    )
    .unwrap()
    .0;

    let check = |what: &str| {
        let r = client.get(format!("{base}/v1/presets")).send().unwrap();
        assert_eq!(r.status(), 401, "{what}: anonymous");
        assert!(r.headers().contains_key("www-authenticate"), "{what}");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        assert_eq!(
            post_job(&client, &base, None).0,
            401,
            "{what}: anonymous submission"
        );
        assert_eq!(
            post_job(&client, &base, Some(&forged)).0,
            401,
            "{what}: forged"
        );
        let (st, body) = post_job(&client, &base, Some(&token));
        assert_eq!(st, 202, "{what}: {body}");
        let job: JobView = serde_json::from_str(&body).unwrap();
        assert_eq!(
            status(&client, &format!("{base}/v1/jobs/{}", job.id), Some(&token)),
            200
        );
        assert_eq!(
            status(&client, &format!("{base}/v1/jobs/{}", job.id), None),
            401
        );
        assert_eq!(
            status(
                &client,
                &format!("{base}/v1/jobs/{}", job.id),
                Some(&forged)
            ),
            401
        );
    };
    check("with the controller");
    // A per-cluster token from the cluster's own store (the first design) still works through
    // the edge, which forwards it for that cluster to check (legacy_tokens).
    let legacy = Command::new(BIN)
        .args(["token", "create", "--scope", "read", "--data-dir"])
        .arg(d.join("aws"))
        .output()
        .unwrap();
    assert!(
        legacy.status.success(),
        "{}",
        String::from_utf8_lossy(&legacy.stderr)
    );
    let legacy = String::from_utf8(legacy.stdout).unwrap().trim().to_string();
    assert!(legacy.starts_with("rly_"), "{legacy}");
    assert_eq!(
        status(&client, &format!("{base}/v1/presets"), Some(&legacy)),
        200
    );
    let bogus = format!("rly_0123456789ab_{}", "0".repeat(64));
    assert_eq!(
        status(&client, &format!("{base}/v1/presets"), Some(&bogus)),
        401
    );
    // The edge's own verdict names the reason.
    let r = client
        .get(format!("{base}/v1/presets"))
        .bearer_auth(&forged)
        .send()
        .unwrap();
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{body}"
    );

    // The controller dies; nginx keeps serving: still nothing anonymous, tokens checked by the
    // cluster.
    let _ = controller.child.kill();
    let _ = controller.child.wait();
    check("controller dead");
}

/// A web player on another origin reads outputs through an `[auth]` edge: its preflight (no
/// token) reaches the owner and is answered, its Range read with a token comes back with the
/// cluster's CORS headers; the job API answers no other origin, and a read without a token is
/// still refused.
#[test]
fn output_cors_passes_through_an_auth_edge_and_preflights_need_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path());
    let client = http();
    let admin = std::fs::read_to_string(up.state.join("admin.token")).unwrap();
    let admin = admin.trim();
    let input = clip(dir.path());
    let out = cli(
        &up.edge,
        admin,
        &[
            "submit",
            input.to_str().unwrap(),
            "--preset",
            "mp4-360p",
            "--wait",
            "--json",
        ],
    );
    let job: JobView = serde_json::Deserializer::from_str(&out)
        .into_iter::<JobView>()
        .last()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no job view in {out}"));
    assert_eq!(job.status, reelay_protocol::JobStatus::Succeeded, "{out}");
    let file = format!("{}/v1/jobs/{}/outputs/mp4-360p.mp4", up.edge, job.id);
    let origin = "http://127.0.0.1:1";
    let header = |r: &reqwest::blocking::Response, n: &str| {
        r.headers().get(n).map(|v| v.to_str().unwrap().to_string())
    };

    let r = client
        .request(reqwest::Method::OPTIONS, &file)
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization,range")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text());
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    let allowed = header(&r, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("range"));

    let r = client
        .get(&file)
        .header("Origin", origin)
        .header("Range", "bytes=10-19")
        .bearer_auth(admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("content-range") && exposed.contains("accept-ranges"));
    assert!(header(&r, "content-range")
        .unwrap()
        .starts_with("bytes 10-19/"));

    // No token, no file; a plain OPTIONS is no preflight and gets no pass either.
    let r = client.get(&file).header("Origin", origin).send().unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .request(reqwest::Method::OPTIONS, &file)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // The job API answers no other origin, preflight or not.
    for path in [format!("/v1/jobs/{}", job.id), "/v1/jobs".to_string()] {
        let r = client
            .request(reqwest::Method::OPTIONS, format!("{}{path}", up.edge))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .send()
            .unwrap();
        assert!(!r.status().is_success(), "{path}: {}", r.status());
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{path}");
        let r = client
            .get(format!("{}{path}", up.edge))
            .header("Origin", origin)
            .bearer_auth(admin)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{path}");
    }
}

/// The edge remembers allowed token checks for up to 2 s (issue 16 part 5, `auth_cache`); a
/// revocation it collects must end that memory at once. gcp here checks no tokens at all (it
/// serves anonymous requests), so for a read routed to gcp the edge's check is the only one:
/// a remembered "allowed" after the revocation would come back as a 200.
#[test]
fn a_revoked_token_is_refused_by_the_edge_on_the_next_request_though_it_was_just_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trusted = common::keygen(d);
    let aws = common::Cluster::start_with_config(
        d,
        "aws",
        "127.0.0.1",
        1,
        &format!(
            "trusted_keys = \"{}\"\nissuer_key = \"{}\"\n",
            trusted.display(),
            d.join("issuer.key").display()
        ),
    );
    let gcp = common::Cluster::start(d, "gcp", "127.0.0.1", 1);
    let edge = common::Edge::start(
        d,
        &[("aws", aws.base(), 1), ("gcp", gcp.base(), 1)],
        &format!(
            "[auth]\ntrusted_keys = \"{}\"\nrevocation_sync_ms = 500\n",
            trusted.display()
        ),
    );
    let reader = common::signed_token(d, "team-a", &["read"]);
    let other = common::signed_token(d, "team-a", &["read"]);
    let admin = common::signed_token(d, "ops", &["admin"]);
    let job = gcp.submit_direct(&stall_server());
    let client = edge.client();
    let read = |token: &str| {
        client
            .get(edge.url(&format!("/v1/jobs/{job}")))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let metric = |name: &str| -> u64 {
        let text = http()
            .get(format!("{}/edge/metrics", edge.control()))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    const CACHED: &str = "reelay_edge_token_checks_total{answer=\"cached\"}";

    // Allowed, and the second and third answers come from the edge's memory.
    for _ in 0..3 {
        assert_eq!(read(&reader).status(), 200);
    }
    assert!(metric(CACHED) >= 2, "the allowed check was not remembered");
    // Nonsense is refused by the edge itself (gcp would let anything through).
    assert_eq!(read("rly2.nonsense.x").status(), 401);

    // Revoked on aws, behind the edge's back; the edge collects it within ~500 ms. Until then
    // the reads keep succeeding (and keep the allowed answer fresh in the edge's memory).
    let id = verify(
        &reader,
        &load_trusted_keys(&trusted).unwrap(),
        &Default::default(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
    .jti;
    assert_eq!(read(&reader).status(), 200);
    let mut last_allowed = Instant::now();
    cli(&aws.base(), &admin, &["token", "revoke", &id]);
    let mut allowed_before = 0;
    wait_until(
        "the edge to collect the revocation",
        Duration::from_secs(10),
        || {
            if metric("reelay_edge_revocations") >= 1 {
                return Some(());
            }
            let st = read(&reader).status().as_u16();
            if st == 200 {
                allowed_before += 1;
                last_allowed = Instant::now();
            } else {
                // Only because the edge learnt of it between the two requests.
                assert_eq!(st, 401);
                assert!(metric("reelay_edge_revocations") >= 1);
            }
            None
        },
    );
    // Refused on the very next request, although it was allowed moments ago: well within the
    // 2 s the edge would otherwise have remembered that (else this test would prove nothing).
    let since = last_allowed.elapsed();
    assert_refused_as_revoked(read(&reader), "a remembered answer outlived the revocation");
    eprintln!(
        "the revoked token was allowed {allowed_before} times while aws alone knew; \
         refused {since:?} after it was last allowed"
    );
    assert!(since < Duration::from_millis(1500), "{since:?}");
    // Other tokens are untouched by the forgetting.
    assert_eq!(read(&other).status(), 200);
    assert_eq!(read(&other).status(), 200);
}
