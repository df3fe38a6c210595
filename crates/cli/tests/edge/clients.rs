//! Clients that get it wrong, by accident or on purpose (issue 12): each gets its own clear
//! JSON 4xx, and none of them changes where other clients' jobs go.

use crate::common::{counts, http, request_id, Cluster, Edge, TwoClouds};
use reelay_edge::health::Health;
use reelay_protocol::ErrorBody;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let clouds = TwoClouds::builder().workers(2, 2).start(dir.path());
    let (edge, stall) = (&clouds.edge, &clouds.stall);
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
        let (id, on) = edge.submit_placed(&client, None, stall);
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
    let token = shared_token(&[
        Cluster::data_dir(dir.path(), "aws", "127.0.0.1"),
        Cluster::data_dir(dir.path(), "gcp", "127.0.0.1"),
    ]);
    let clouds = TwoClouds::builder()
        .workers(2, 2)
        .cluster_config("body_idle_timeout_seconds = 1\n")
        .edge("client_max_body_size = \"4m\"\nclient_body_timeout_seconds = 3")
        .start(dir.path());
    let (edge, stall) = (&clouds.edge, &clouds.stall);
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
        let (id, on) = edge.submit_placed(&client, Some(&token), stall);
        assert!(id.starts_with(&format!("{on}.")), "{id} was placed on {on}");
        valid.push(id);
    }
    let c = counts(&valid);
    assert!(c.len() == 2, "both clusters take work: {c:?}");
    let log = edge.error_log();
    assert!(!log.contains("temporarily disabled"), "{log}");
    eprintln!("hostile-clients test took {:?}", t0.elapsed());
}
