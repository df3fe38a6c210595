//! Webhooks: per-job notify URLs through the SSRF guard at submit, delivery rows claimed in order
//! per job per endpoint with leases, retries with backoff and every attempt recorded, signatures,
//! redelivery by hand. A real cluster, a real receiver over HTTP (the independent signature check
//! with the `standardwebhooks` package is scripts/webhooks-test.sh).

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{clip, TestServer};
use reelay_jobs::{now_millis, AttemptOutcome, DeliveryAttempt, NewDelivery};
use reelay_server::webhooks::{dispatch::Dispatcher, sign};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn post_json(s: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn private_and_too_many_notify_urls_are_refused_at_submit() {
    let s = TestServer::start().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/hook",
    ] {
        // (A host name is checked where it is connected to, by the guarded resolver, as for
        // input URLs: its attempts fail, recorded, and the job is unaffected.)
        let (status, body) = post_json(
            &s,
            serde_json::json!({
                "input": {"url": "https://media.example.com/clip.mp4"},
                "outputs": [{"preset": "thumbnail"}],
                "notify": [{"url": "https://hooks.example.com/ok"}, {"url": url}],
            }),
        )
        .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "forbidden_url", "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("notify[1].url:"), "{message}");
    }
    let (status, body) = post_json(
        &s,
        serde_json::json!({
            "input": {"url": "https://media.example.com/clip.mp4"},
            "outputs": [{"preset": "thumbnail"}],
            "notify": [{"url": "ftp://hooks.example.com/"}],
        }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_url")),
        "{body}"
    );
    let many: Vec<_> = (0..5)
        .map(|i| serde_json::json!({"url": format!("https://h{i}.example.com/")}))
        .collect();
    let (status, body) = post_json(
        &s,
        serde_json::json!({
            "input": {"url": "https://media.example.com/clip.mp4"},
            "outputs": [{"preset": "thumbnail"}],
            "notify": many,
        }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_spec")),
        "{body}"
    );
    // The multipart path refuses it too, before reading the file.
    let c = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, false);
    let r = s
        .submit_file(
            &c,
            r#"{"outputs":[{"preset":"thumbnail"}],"notify":[{"url":"http://10.1.2.3/"}]}"#,
        )
        .await;
    assert_eq!(r.status(), 422);
    let listed: serde_json::Value = s.get_json("/v1/jobs").await;
    let list = listed["jobs"].as_array().unwrap();
    assert!(list.is_empty(), "no job was created: {list:?}");
}

/// The store side alone: one row per event and endpoint however often it is enqueued, a later
/// event waits for the earlier one of the same job and endpoint, a lease is held by one owner.
#[tokio::test]
async fn deliveries_are_claimed_once_and_in_order() {
    let s = TestServer::start_with(|c| c.workers = 0).await;
    let (status, job) = post_json(
        &s,
        serde_json::json!({"input": {"url": "https://media.example.com/clip.mp4"},
                           "outputs": [{"preset": "thumbnail"}]}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    let store = s.state.store.clone();
    let row = |seq: i64| NewDelivery {
        id: format!("msg_t_{seq}"),
        job_id: job_id.clone(),
        endpoint: "notify:0".into(),
        url: "https://hooks.example.com/".into(),
        event_id: 1000 + seq,
        seq,
        kind: "job.created".into(),
        body: "{}".into(),
    };
    assert_eq!(
        store
            .enqueue_deliveries(vec![row(1), row(2)])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .enqueue_deliveries(vec![row(1), row(2)])
            .await
            .unwrap(),
        0
    );
    let lease = Duration::from_secs(30);
    let now = now_millis();
    let a = store.claim_deliveries("a", lease, now, 10).await.unwrap();
    assert_eq!(a.iter().map(|d| d.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(a[0].attempts, 1);
    // Leased to a, and seq 2 waits for seq 1.
    assert!(store
        .claim_deliveries("b", lease, now, 10)
        .await
        .unwrap()
        .is_empty());
    let attempt = |owner_n: u32, code: Option<u16>| DeliveryAttempt {
        delivery_id: "msg_t_1".into(),
        n: owner_n,
        at: now,
        status_code: code,
        latency_ms: 3,
        error: code.filter(|c| *c >= 300).map(|c| format!("HTTP {c}")),
    };
    // Only the lease holder records.
    assert!(!store
        .record_attempt(
            "b",
            attempt(1, Some(503)),
            AttemptOutcome::RetryAt(now + 1000)
        )
        .await
        .unwrap());
    assert!(store
        .record_attempt(
            "a",
            attempt(1, Some(503)),
            AttemptOutcome::RetryAt(now + 1000)
        )
        .await
        .unwrap());
    // Not due yet, and seq 2 still waits behind it.
    assert!(store
        .claim_deliveries("b", lease, now, 10)
        .await
        .unwrap()
        .is_empty());
    let b = store
        .claim_deliveries("b", lease, now + 1000, 10)
        .await
        .unwrap();
    assert_eq!(
        b.iter().map(|d| (d.seq, d.attempts)).collect::<Vec<_>>(),
        [(1, 2)]
    );
    assert!(store
        .record_attempt("b", attempt(2, Some(204)), AttemptOutcome::Delivered)
        .await
        .unwrap());
    let c = store
        .claim_deliveries("c", lease, now + 1000, 10)
        .await
        .unwrap();
    assert_eq!(c.iter().map(|d| d.seq).collect::<Vec<_>>(), [2]);
    // An expired lease is taken over.
    let d = store
        .claim_deliveries("d", lease, now + 1000 + 31_000, 10)
        .await
        .unwrap();
    assert_eq!(
        d.iter().map(|d| (d.seq, d.attempts)).collect::<Vec<_>>(),
        [(2, 2)]
    );
    let listed = store.job_deliveries(&job_id).await.unwrap();
    assert_eq!(listed[0].0.state, "delivered");
    let codes: Vec<_> = listed[0].1.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(503), Some(204)]);
}

/// One request the receiver accepted: webhook-id, event type, body, headers.
type Got = (String, String, String, HeaderMap);

#[derive(Clone, Default)]
struct Receiver {
    fail_first: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Got>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = headers["webhook-id"].to_str().unwrap().to_string();
    r.got
        .lock()
        .unwrap()
        .push((id, v["type"].as_str().unwrap().to_string(), body, headers));
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn a_failing_receiver_gets_every_event_in_order_signed_and_redeliverable() {
    let s = TestServer::start_with(|c| {
        c.workers = 1;
        c.allow_private_urls = true;
        c.webhooks.backoff_base_ms = 100;
        c.webhooks.backoff_max_seconds = 1;
        c.webhooks.poll_ms = 50;
    })
    .await;
    let receiver = Receiver::default();
    receiver.fail_first.store(4, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dispatcher = Dispatcher::new(
        s.state.store.clone(),
        s.state.cfg.clone(),
        s.state.notify_key.clone(),
    )
    .unwrap();
    tokio::spawn(dispatcher.run(s.state.stopping.clone()));

    let c = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, false);
    let spec = format!(
        r#"{{"outputs":[{{"preset":"thumbnail"}}],"notify":[{{"url":"{hook}"}}],"metadata":{{"order_id":"A-1"}}}}"#
    );
    let job = s.submit_ok(&c, &spec).await;
    s.wait(&job.id, Duration::from_secs(60)).await;
    let want = ["job.created", "job.started", "job.succeeded"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let types: Vec<String> = receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|g| g.1.clone())
            .collect();
        if types.len() >= 3 {
            assert_eq!(types, want, "in order, each once");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "got only {types:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret: serde_json::Value = s.get_json("/v1/webhooks/secret").await;
    let key = sign::secret_bytes(secret["secret"].as_str().unwrap()).unwrap();
    for (id, _, body, headers) in receiver.got.lock().unwrap().iter() {
        let ts: i64 = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((ts - now_millis() / 1000).abs() < 60);
        assert_eq!(
            headers["webhook-signature"].to_str().unwrap(),
            sign::signature(&key, id, ts, body)
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["data"]["id"], job.id.as_str());
        // The payload is the job view: the caller's context comes back with every event.
        assert_eq!(v["data"]["metadata"]["order_id"], "A-1", "{body}");
        assert_eq!(v["data"]["input"]["name"], "clip.mp4", "{body}");
    }
    let list: serde_json::Value = s.get_json(&format!("/v1/jobs/{}/webhooks", job.id)).await;
    let deliveries = list["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3, "{list}");
    let first = &deliveries[0];
    assert_eq!(first["state"], "delivered");
    let log = first["attempt_log"].as_array().unwrap();
    // The first delivery took the four 503s (the others waited behind it), then a 204.
    let codes: Vec<_> = log.iter().map(|a| a["status_code"].as_u64()).collect();
    assert_eq!(
        codes,
        [Some(503), Some(503), Some(503), Some(503), Some(204)],
        "{first}"
    );
    assert!(log.iter().all(|a| a["latency_ms"].as_i64().unwrap() >= 0));
    assert_eq!(log[0]["error"], "HTTP 503");

    // By hand: the same message again, same webhook-id.
    let id = deliveries[2]["id"].as_str().unwrap();
    let r = s
        .http
        .post(s.url(&format!("/v1/jobs/{}/webhooks/{id}/redeliver", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.got.lock().unwrap().len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no redelivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.got.lock().unwrap()[3].0, id);
    let r = s
        .http
        .post(s.url(&format!("/v1/jobs/{}/webhooks/msg_other/redeliver", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
