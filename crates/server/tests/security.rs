//! Authentication, authorisation, rate limits, the header read timeout and (mutual) TLS, against
//! a real server on loopback.

mod common;

use common::TestServer;
use reelay_server::auth::{issue_token, Scope};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const URL_JOB: &str =
    r#"{"input":{"url":"https://media.example.com/clip.mp4"},"outputs":[{"preset":"mp4-480p"}]}"#;

async fn token(s: &TestServer, scopes: &[Scope]) -> String {
    issue_token(&*s.state.store, "test", scopes)
        .await
        .unwrap()
        .token
}

async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = s.http.request(method.clone(), s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if method == reqwest::Method::POST {
        req = req.header("content-type", "application/json").body(URL_JOB);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, json)
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// No worker slots: the URL jobs these tests submit stay queued and never touch the network.
async fn server(tweak: impl FnOnce(&mut reelay_server::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.workers = 1;
        tweak(c)
    })
    .await
}

#[tokio::test]
async fn loopback_without_tokens_runs_open_until_a_token_exists() {
    let s = server(|_| {}).await;
    let (st, _, _) = call(&s, reqwest::Method::GET, "/v1/presets", None).await;
    assert_eq!(st, 200, "open mode: loopback and no token");
    let (st, _, open_job) = call(&s, reqwest::Method::POST, "/v1/jobs", None).await;
    assert_eq!(st, 202, "{open_job}");

    let admin = token(&s, &[Scope::Admin]).await;
    let (st, h, body) = call(&s, reqwest::Method::GET, "/v1/presets", None).await;
    assert_eq!(st, 401, "a token exists: the API is locked at once");
    assert_eq!(code(&body), "unauthorized");
    assert!(h["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let (st, _, _) = call(&s, reqwest::Method::GET, "/v1/presets", Some(&admin)).await;
    assert_eq!(st, 200);
    // Jobs submitted in open mode have no owner: only admins see them.
    let id = open_job["id"].as_str().unwrap();
    let (st, _, _) = call(
        &s,
        reqwest::Method::GET,
        &format!("/v1/jobs/{id}"),
        Some(&admin),
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn non_loopback_listen_requires_tokens_even_without_any() {
    let s = server(|c| c.listen = "0.0.0.0:8080".into()).await;
    for path in ["/v1/presets", "/v1/jobs"] {
        let (st, _, body) = call(&s, reqwest::Method::GET, path, None).await;
        assert_eq!(st, 401, "{path}: {body}");
    }
    // Health and metrics stay open.
    for path in ["/healthz", "/metrics"] {
        let (st, _, _) = call(&s, reqwest::Method::GET, path, None).await;
        assert_eq!(st, 200, "{path}");
    }
}

#[tokio::test]
async fn scopes_and_ownership_are_enforced() {
    let s = server(|_| {}).await;
    let alice = token(&s, &[Scope::Submit, Scope::Read]).await;
    let bob = token(&s, &[Scope::Submit, Scope::Read]).await;
    let reader = token(&s, &[Scope::Read]).await;
    let submit_only = token(&s, &[Scope::Submit]).await;
    let admin = token(&s, &[Scope::Admin]).await;
    let m = reqwest::Method::GET;

    // Unknown, malformed, wrong-secret tokens: 401.
    let wrong_secret = format!(
        "{}{}",
        &alice[..alice.len() - 1],
        if alice.ends_with('0') { "1" } else { "0" }
    );
    for bad in [
        "nope",
        "rly_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
        wrong_secret.as_str(),
    ] {
        let (st, h, body) = call(&s, m.clone(), "/v1/jobs", Some(bad)).await;
        assert_eq!((st, code(&body)), (401, "unauthorized"), "{bad}");
        assert!(h.contains_key("www-authenticate"));
    }

    // Too little scope: 403.
    let (st, _, body) = call(&s, reqwest::Method::POST, "/v1/jobs", Some(&reader)).await;
    assert_eq!((st, code(&body)), (403, "forbidden"));
    let (st, _, _) = call(&s, m.clone(), "/v1/jobs", Some(&submit_only)).await;
    assert_eq!(st, 403);

    let (st, _, job) = call(&s, reqwest::Method::POST, "/v1/jobs", Some(&alice)).await;
    assert_eq!(st, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{id}");

    // Alice and admins see it; Bob and other read tokens do not (404, not 403: no existence leak).
    assert_eq!(call(&s, m.clone(), &path, Some(&alice)).await.0, 200);
    assert_eq!(call(&s, m.clone(), &path, Some(&admin)).await.0, 200);
    assert_eq!(call(&s, m.clone(), &path, Some(&bob)).await.0, 404);
    assert_eq!(call(&s, m.clone(), &path, Some(&reader)).await.0, 404);
    assert_eq!(
        call(&s, m.clone(), &format!("{path}/events"), Some(&bob))
            .await
            .0,
        404
    );
    assert_eq!(
        call(&s, m.clone(), &format!("{path}/outputs"), Some(&bob))
            .await
            .0,
        404
    );
    assert_eq!(
        call(&s, reqwest::Method::DELETE, &path, Some(&bob)).await.0,
        404
    );

    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&call(&s, m.clone(), "/v1/jobs", Some(&alice)).await.2),
        vec![id.clone()]
    );
    assert!(ids(&call(&s, m.clone(), "/v1/jobs", Some(&bob)).await.2).is_empty());
    assert_eq!(
        ids(&call(&s, m.clone(), "/v1/jobs", Some(&admin)).await.2),
        vec![id.clone()]
    );

    // Idempotency keys are per token: Alice's key neither hands her job to Bob nor tells him
    // it was used; the same key is simply Bob's own.
    let post = |t: &str| {
        s.http
            .post(s.url("/v1/jobs"))
            .bearer_auth(t)
            .header("content-type", "application/json")
            .header("idempotency-key", "k1")
            .body(URL_JOB)
            .send()
    };
    let id_of = |r: reqwest::Response| async move {
        let v: serde_json::Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let r = post(&alice).await.unwrap();
    assert_eq!(r.status(), 202);
    let alices = id_of(r).await;
    let r = post(&alice).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(id_of(r).await, alices);
    let r = post(&bob).await.unwrap();
    assert_eq!(
        r.status(),
        202,
        "Bob's key is his own, not a conflict with Alice's"
    );
    let bobs = id_of(r).await;
    assert_ne!(bobs, alices);
    let r = post(&bob).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(id_of(r).await, bobs);

    // Revoked: 401 from then on.
    let alice_id = reelay_server::auth::parse_token(&alice)
        .unwrap()
        .0
        .to_string();
    assert!(s.state.store.revoke_token(&alice_id).await.unwrap());
    assert_eq!(call(&s, m.clone(), &path, Some(&alice)).await.0, 401);
    // Last use was recorded.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed = s.state.store.list_tokens().await.unwrap();
    assert!(listed
        .iter()
        .find(|t| t.id == alice_id)
        .unwrap()
        .last_used_at
        .is_some());
    assert!(listed.iter().all(|t| t.secret_hash.len() == 64));
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let s = server(|c| c.rate_limit_per_minute = 3).await;
    let t = token(&s, &[Scope::Read]).await;
    let other = token(&s, &[Scope::Read]).await;
    for _ in 0..3 {
        assert_eq!(
            call(&s, reqwest::Method::GET, "/v1/presets", Some(&t))
                .await
                .0,
            200
        );
    }
    let (st, h, body) = call(&s, reqwest::Method::GET, "/v1/presets", Some(&t)).await;
    assert_eq!((st, code(&body)), (429, "rate_limited"));
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // Per token: another token still has its budget; health is never limited.
    assert_eq!(
        call(&s, reqwest::Method::GET, "/v1/presets", Some(&other))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&s, reqwest::Method::GET, "/healthz", None).await.0,
        200
    );
}

/// Open mode exists only on loopback, where every client shares one address: no limit there.
#[tokio::test]
async fn open_mode_is_not_rate_limited() {
    let s = server(|c| c.rate_limit_per_minute = 2).await;
    for _ in 0..5 {
        assert_eq!(
            call(&s, reqwest::Method::GET, "/v1/presets", None).await.0,
            200
        );
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let s = server(|c| c.header_read_timeout_seconds = 1).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A slow-loris client: one header byte every 200 ms, never finishing.
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for b in request {
            if tcp.write_all(&[*b]).is_err() {
                return "closed while writing";
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut buf = [0u8; 512];
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => "closed",
            Ok(_) => "answered",
        }
    })
    .await
    .unwrap();
    // Whatever was written back (hyper may send a 408 first), the connection ended long before
    // the client finished dribbling its ~70 header bytes (14 s).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{outcome} after {:?}",
        started.elapsed()
    );
    // And normal clients are unaffected.
    assert_eq!(
        call(&s, reqwest::Method::GET, "/healthz", None).await.0,
        200
    );
}

/// A private CA, a server certificate for 127.0.0.1/localhost and client certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_pem: String,
    rogue_client_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("reelay test CA");
    let (rogue_cert, rogue_key) = ca("rogue CA");
    let leaf = |names: Vec<String>, issuer: &rcgen::Certificate, issuer_key: &KeyPair| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer, issuer_key)
            .unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    };
    let server = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        &ca_cert,
        &ca_key,
    );
    let (cert_pem, key_pem) = server.split_at(server.find("-----BEGIN PRIVATE KEY").unwrap());
    std::fs::write(dir.path().join("server.pem"), cert_pem).unwrap();
    std::fs::write(dir.path().join("server.key"), key_pem).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        client_pem: leaf(vec!["edge".into()], &ca_cert, &ca_key),
        rogue_client_pem: leaf(vec!["edge".into()], &rogue_cert, &rogue_key),
        dir,
    }
}

fn tls_client(ca_pem: &str, identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn tls_serves_https_and_mutual_tls_refuses_clients_without_the_right_certificate() {
    let pki = pki();
    let d = pki.dir.path().to_path_buf();
    let s = server(|c| {
        c.tls_cert = Some(d.join("server.pem"));
        c.tls_key = Some(d.join("server.key"));
        c.tls_client_ca = Some(d.join("ca.pem"));
    })
    .await;
    assert!(s.base.starts_with("https://"));
    let url = s.url("/healthz");

    let good = tls_client(&pki.ca_pem, Some(&pki.client_pem));
    let r = good
        .get(&url)
        .send()
        .await
        .expect("client certificate from the CA");
    assert_eq!(r.status(), 200);

    let anonymous = tls_client(&pki.ca_pem, None);
    assert!(
        anonymous.get(&url).send().await.is_err(),
        "no client certificate"
    );
    let rogue = tls_client(&pki.ca_pem, Some(&pki.rogue_client_pem));
    assert!(
        rogue.get(&url).send().await.is_err(),
        "client certificate of another CA"
    );
    // Plain HTTP on the TLS port gets nowhere either.
    let plain = reqwest::Client::new()
        .get(url.replacen("https://", "http://", 1))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    // And the server is still fine.
    assert_eq!(good.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn tls_without_client_ca_accepts_any_client() {
    let pki = pki();
    let d = pki.dir.path().to_path_buf();
    let s = server(|c| {
        c.tls_cert = Some(d.join("server.pem"));
        c.tls_key = Some(d.join("server.key"));
    })
    .await;
    let anonymous = tls_client(&pki.ca_pem, None);
    let r = anonymous.get(s.url("/v1/presets")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Polls a job with `token` until it ends; its final view.
async fn wait_as(s: &TestServer, token: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, _, v) = call(
            s,
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}"),
            Some(token),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        if matches!(
            v["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return v;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs a JSON job naming `key` as its input.
async fn submit_key(s: &TestServer, token: &str, key: &str) -> (u16, String) {
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .bearer_auth(token)
        .json(&serde_json::json!({"input": {"key": key}, "outputs": [{"preset": "audio-aac"}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `input.key` must not reach another tenant's files: reelay's own `inputs/` and `outputs/` are
/// never readable by key, and whether such an object exists must not show. A key that names an
/// upload or an output of another tenant answers exactly like a key that names nothing.
fn token_id(token: &str) -> String {
    reelay_server::auth::parse_token(token)
        .unwrap()
        .0
        .to_string()
}

#[tokio::test]
async fn key_inputs_cannot_read_reelays_own_objects_or_tell_they_exist() {
    let s = server(|c| {
        c.workers = 2;
        c.key_input_prefix = Some("imports".into());
    })
    .await;
    let alice = token(&s, &[Scope::Submit, Scope::Read]).await;
    let bob = token(&s, &[Scope::Submit, Scope::Read]).await;
    let clip = common::clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let form = reqwest::multipart::Form::new()
        .text("spec", r#"{"outputs":[{"preset":"audio-aac"}]}"#)
        .part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(&clip).unwrap()).file_name("c.mp4"),
        );
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .bearer_auth(&alice)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: reelay_protocol::JobView = r.json().await.unwrap();
    let done = wait_as(&s, &alice, &job.id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Her output, fetched with her token, is hers alone: no shared cache may keep it.
    let url = done["outputs"][0]["url"].as_str().unwrap();
    let r = s
        .http
        .get(s.url(url))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "private, max-age=86400, immutable"
    );

    let missing = submit_key(&s, &bob, "inputs/local.01ARZ3NDEKTSV4RRFFQ69G5FAV/source").await;
    assert_eq!(missing.0, 422, "{}", missing.1);
    assert_eq!(
        submit_key(&s, &bob, &format!("imports/{}/nope.mp4", token_id(&bob))).await,
        missing,
        "a missing key in Bob's own directory"
    );
    for key in [
        format!("inputs/{}/source", job.id),
        format!("inputs/{}/probe.json", job.id),
        format!("outputs/{}/a1/audio-aac.m4a", job.id),
    ] {
        for who in [&bob, &alice] {
            let got = submit_key(&s, who, &key).await;
            assert_eq!(got, missing, "{key}: answered unlike a missing key");
        }
    }
}

/// Within the prefix, a non-admin token reads only `<prefix>/<its token id>/…`; admins read
/// anything under the prefix; a job stored with a key outside the prefix (from before it was
/// set) fails without its input being read.
#[tokio::test]
async fn key_inputs_are_confined_to_the_prefix_and_the_owners_directory() {
    let s = server(|c| {
        c.workers = 2;
        c.key_input_prefix = Some("imports/".into());
    })
    .await;
    let alice = token(&s, &[Scope::Submit, Scope::Read]).await;
    let bob = token(&s, &[Scope::Submit, Scope::Read]).await;
    let admin = token(&s, &[Scope::Admin]).await;
    let storage = s.state.cfg.data_dir.join("storage");
    let clip = common::clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let alices = format!("imports/{}/clip.mp4", token_id(&alice));
    for key in [alices.as_str(), "imports/shared.mp4", "loose.mp4"] {
        let dst = storage.join(key);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&clip, dst).unwrap();
    }
    let missing = submit_key(&s, &bob, &format!("imports/{}/none.mp4", token_id(&bob))).await;
    assert_eq!(missing.0, 422);
    assert!(missing.1.contains("input_not_found"), "{}", missing.1);

    // Alice reads her own file; the job succeeds.
    let (st, body) = submit_key(&s, &alice, &alices).await;
    assert_eq!(st, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_as(&s, &alice, &id).await["status"], "succeeded");

    // Bob cannot, nor anything outside an owner's directory or outside the prefix.
    for key in [alices.as_str(), "imports/shared.mp4", "loose.mp4"] {
        assert_eq!(submit_key(&s, &bob, key).await, missing, "{key}");
    }
    // An admin reads anything under the prefix, nothing outside it.
    for key in [alices.as_str(), "imports/shared.mp4"] {
        assert_eq!(submit_key(&s, &admin, key).await.0, 202, "{key}");
    }
    assert_eq!(submit_key(&s, &admin, "loose.mp4").await, missing);

    // A job stored with a key outside the prefix (as before the prefix existed) fails at the
    // worker without reading it.
    let stale = reelay_jobs::NewJob {
        id: format!("local.{}", ulid::Ulid::new()),
        cluster: "local".into(),
        spec_json: r#"{"input":{"key":"loose.mp4"},"outputs":[{"preset":"audio-aac"}]}"#.into(),
        spec_hash: "stale".into(),
        input_key: Some("loose.mp4".into()),
        input_url: None,
        priority: 0,
        idempotency_key: None,
        max_attempts: 3,
        estimated_seconds: 60.0,
        owner: Some(token_id(&bob)),
        tasks: vec![reelay_jobs::NewTask::transcode(60.0)],
        split_json: None,
        metadata: Default::default(),
        input_name: None,
        input_facts: None,
    };
    s.state.store.create_job(stale.clone()).await.unwrap();
    let v = wait_as(&s, &bob, &stale.id).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "input_not_found", "{v}");
    assert_eq!(v["attempts"], 1);
}
