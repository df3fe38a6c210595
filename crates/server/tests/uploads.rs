//! tus 1.0 resumable uploads on a real server (local storage, real ffmpeg): offsets, a dropped
//! connection kept and resumed, concurrent PATCHes, termination, expiry and the sweeper, owner
//! scoping with signed tokens, bad headers (4xx with JSON, never 5xx), and an upload becoming a
//! job's input that ffprobe then checks.

mod common;

use common::TestServer;
use reelay_identity::token::{issue, NewClaims};
use reelay_identity::{Scope, SigningKey};
use reqwest::Method;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    token: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut req = s.http.request(method.clone(), s.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    assert!(status < 500, "{method} {path}: {status} {text}");
    if status >= 400 && method != Method::HEAD {
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/json",
            "{method} {path}: {status} {text}"
        );
    }
    assert_eq!(
        headers.get("tus-resumable").map(|v| v.to_str().unwrap()),
        Some("1.0.0"),
        "{method} {path}: {status}"
    );
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    }
}

async fn create(s: &TestServer, length: u64, token: Option<&str>) -> String {
    let len = length.to_string();
    let a = call(
        s,
        Method::POST,
        "/v1/uploads",
        &[
            TUS,
            ("upload-length", &len),
            ("upload-metadata", "filename Y2xpcC5tcDQ="),
        ],
        token,
        vec![],
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.header("upload-offset"), "0");
    assert!(a.header("upload-expires").ends_with(" GMT"));
    let loc = a.header("location").to_string();
    assert!(loc.starts_with("/v1/uploads/local."), "{loc}");
    loc
}

async fn patch(
    s: &TestServer,
    loc: &str,
    offset: u64,
    bytes: &[u8],
    token: Option<&str>,
) -> Answer {
    let off = offset.to_string();
    call(
        s,
        Method::PATCH,
        loc,
        &[TUS, OCTETS, ("upload-offset", &off)],
        token,
        bytes.to_vec(),
    )
    .await
}

async fn offset(s: &TestServer, loc: &str, token: Option<&str>) -> Answer {
    call(s, Method::HEAD, loc, &[TUS], token, vec![]).await
}

fn submit_body(upload: &str) -> String {
    format!(r#"{{"input":{{"upload":"{upload}"}},"outputs":[{{"preset":"mp4-360p"}}]}}"#)
}

async fn submit(s: &TestServer, upload: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = s
        .http
        .post(s.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(submit_body(upload));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn id_of(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn an_upload_in_pieces_resumes_at_its_offset_and_becomes_a_job_input() {
    let s = TestServer::start().await;
    let clip = common::clip(s.dir.path(), "in.mp4", 320, 240, 2.0, true);
    let bytes = std::fs::read(&clip).unwrap();
    let len = bytes.len() as u64;

    let opts = call(&s, Method::OPTIONS, "/v1/uploads", &[], None, vec![]).await;
    assert_eq!(opts.status, 204);
    assert_eq!(opts.header("tus-version"), "1.0.0");
    assert_eq!(
        opts.header("tus-extension"),
        "creation,termination,expiration"
    );
    assert!(opts.header("tus-max-size").parse::<u64>().unwrap() > len);

    let loc = create(&s, len, None).await;
    let h = offset(&s, &loc, None).await;
    assert_eq!((h.status, h.header("upload-offset")), (200, "0"));
    assert_eq!(h.header("upload-length"), len.to_string());
    assert_eq!(h.header("upload-metadata"), "filename Y2xpcC5tcDQ=");
    assert_eq!(h.header("cache-control"), "no-store");

    // Three pieces; a stale offset is refused and changes nothing.
    let (a, b) = (len / 3, 2 * len / 3);
    let p = patch(&s, &loc, 0, &bytes[..a as usize], None).await;
    assert_eq!(
        (p.status, p.header("upload-offset")),
        (204, a.to_string().as_str())
    );
    let stale = patch(&s, &loc, 0, &bytes[..10], None).await;
    assert_eq!((stale.status, stale.code()), (409, "offset_mismatch"));
    let ahead = patch(&s, &loc, b, &bytes[b as usize..], None).await;
    assert_eq!(ahead.status, 409);
    assert_eq!(
        offset(&s, &loc, None).await.header("upload-offset"),
        a.to_string()
    );

    // Not finished yet: no job from it.
    let (st, body) = submit(&s, id_of(&loc), None).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (409, Some("upload_incomplete"))
    );

    let p = patch(&s, &loc, a, &bytes[a as usize..b as usize], None).await;
    assert_eq!(p.header("upload-offset"), b.to_string());
    // Past the declared length: refused whole.
    let past = patch(
        &s,
        &loc,
        b,
        &[bytes[b as usize..].to_vec(), vec![0; 10]].concat(),
        None,
    )
    .await;
    assert_eq!((past.status, past.code()), (413, "past_upload_length"));
    assert_eq!(
        offset(&s, &loc, None).await.header("upload-offset"),
        b.to_string()
    );
    let p = patch(&s, &loc, b, &bytes[b as usize..], None).await;
    assert_eq!(p.header("upload-offset"), len.to_string());

    let (st, job) = submit(&s, id_of(&loc), None).await;
    assert_eq!(st, 202, "{job}");
    // The job is named after the file the tus client named (Upload-Metadata `filename`).
    assert_eq!(job["input"]["name"], "clip.mp4", "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // The input is the uploaded file, byte for byte; the upload itself is gone.
    let stored = std::fs::read(
        s.dir
            .path()
            .join(format!("data/storage/inputs/{id}/source")),
    )
    .unwrap();
    assert!(
        stored == bytes,
        "the job's input differs from the uploaded file"
    );
    assert_eq!(offset(&s, &loc, None).await.status, 404);
    let (st, again) = submit(&s, id_of(&loc), None).await;
    assert_eq!(
        (st, again["error"]["code"].as_str()),
        (422, Some("input_not_found"))
    );

    let done = s.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(
        done.status,
        reelay_protocol::JobStatus::Succeeded,
        "{done:?}"
    );
    let (code, mp4) = s
        .get_bytes(&format!("/v1/jobs/{id}/outputs/mp4-360p.mp4"))
        .await;
    assert_eq!(code, 200);
    let probed = common::ffprobe_bytes(&mp4, "mp4");
    assert_eq!(probed.codec("video").as_deref(), Some("h264"));
    // Never upscaled: a 320x240 input stays 320x240 under mp4-360p.
    assert_eq!(probed.dims(), Some((320, 240)));
    assert!((probed.duration() - 2.0).abs() < 0.2);
    // Probed by the worker: the input's facts, from the uploaded bytes.
    let input = done.input.expect("input");
    assert_eq!(input.size, Some(len));
    assert_eq!((input.width, input.height), (Some(320), Some(240)));
}

#[tokio::test]
async fn a_dropped_patch_keeps_what_arrived_and_the_client_resumes_there() {
    let s = TestServer::start_with(|c| c.body_idle_timeout_seconds = 1).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let loc = create(&s, data.len() as u64, None).await;

    // A PATCH announcing everything that sends 1 MB and then the connection drops.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[..1_000_000]).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sock);

    let mut kept = 0;
    for _ in 0..50 {
        kept = offset(&s, &loc, None)
            .await
            .header("upload-offset")
            .parse::<u64>()
            .unwrap();
        if kept > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept, 1_000_000, "the bytes that arrived are kept");

    // A stalled body (idle timeout) is kept the same way and answered 408.
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {kept}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len() as u64 - kept
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[kept as usize..kept as usize + 500_000])
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut answer))
        .await
        .expect("a stalled PATCH is answered")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("1500000 bytes are stored"), "{text}");
    assert_eq!(
        offset(&s, &loc, None).await.header("upload-offset"),
        "1500000"
    );

    let p = patch(&s, &loc, 1_500_000, &data[1_500_000..], None).await;
    assert_eq!(p.header("upload-offset"), data.len().to_string());
    // The assembled bytes are exactly the data, in order (through a job's input key).
    let up = reelay_server::api::uploads::uploads(&s.state);
    let info = up.load(id_of(&loc), |_| true, chrono_now()).await.unwrap();
    up.take(&info, "local.01J00000000000000000000000", "check/assembled")
        .await
        .unwrap();
    let assembled = std::fs::read(s.dir.path().join("data/storage/check/assembled")).unwrap();
    assert!(assembled == data, "assembled upload differs");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn concurrent_patches_at_one_offset_commit_exactly_once() {
    let s = TestServer::start().await;
    let piece = 2_000_000usize;
    let loc = create(&s, 2 * piece as u64, None).await;
    let mut tasks = Vec::new();
    for n in 0..6u8 {
        let (http, url) = (s.http.clone(), s.url(&loc));
        tasks.push(tokio::spawn(async move {
            let r = http
                .patch(url)
                .header(TUS.0, TUS.1)
                .header(OCTETS.0, OCTETS.1)
                .header("upload-offset", "0")
                .body(vec![n; piece])
                .send()
                .await
                .unwrap();
            (n, r.status().as_u16())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (n, status) = t.await.unwrap();
        assert!(status == 204 || status == 409, "{status}");
        if status == 204 {
            winners.push(n);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one PATCH at offset 0 commits");
    assert_eq!(
        offset(&s, &loc, None).await.header("upload-offset"),
        piece.to_string()
    );
    let p = patch(&s, &loc, piece as u64, &vec![9u8; piece], None).await;
    assert_eq!(p.status, 204);
    let up = reelay_server::api::uploads::uploads(&s.state);
    let info = up.load(id_of(&loc), |_| true, chrono_now()).await.unwrap();
    up.take(&info, "local.01J00000000000000000000000", "check/c")
        .await
        .unwrap();
    let got = std::fs::read(s.dir.path().join("data/storage/check/c")).unwrap();
    assert_eq!(got.len(), 2 * piece);
    assert!(got[..piece].iter().all(|&b| b == winners[0]));
    assert!(got[piece..].iter().all(|&b| b == 9));
    // The losers' chunks were deleted: one chunk per committed part.
    let chunks = s
        .state
        .storage
        .list(&format!("uploads/{}/chunks", id_of(&loc)))
        .await
        .unwrap();
    assert_eq!(chunks.len(), 2, "{chunks:?}");
}

#[tokio::test]
async fn termination_expiry_and_the_sweeper_leave_nothing_behind() {
    let s = TestServer::start_with(|c| c.upload_expiry_seconds = 1).await;
    let loc = create(&s, 100, None).await;
    assert_eq!(patch(&s, &loc, 0, &[1; 40], None).await.status, 204);
    let d = call(&s, Method::DELETE, &loc, &[TUS], None, vec![]).await;
    assert_eq!(d.status, 204);
    assert_eq!(offset(&s, &loc, None).await.status, 404);
    assert_eq!(patch(&s, &loc, 40, &[1; 10], None).await.status, 404);

    let loc = create(&s, 100, None).await;
    assert_eq!(patch(&s, &loc, 0, &[1; 40], None).await.status, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(offset(&s, &loc, None).await.status, 410);
    let p = patch(&s, &loc, 40, &[1; 10], None).await;
    assert_eq!((p.status, p.code()), (410, "upload_expired"));
    let (st, _) = submit(&s, id_of(&loc), None).await;
    assert_eq!(st, 422);

    let up = reelay_server::api::uploads::uploads(&s.state);
    // Within the grace period the sweeper waits (a PATCH may still be running) ...
    assert_eq!(up.sweep(chrono_now(), 60_000).await.unwrap(), 0);
    // ... after it, the upload goes; sweeping twice (another replica) is harmless.
    assert_eq!(up.sweep(chrono_now() + 61_000, 60_000).await.unwrap(), 1);
    assert_eq!(up.sweep(chrono_now() + 61_000, 60_000).await.unwrap(), 0);
    assert!(s.state.storage.list("uploads").await.unwrap().is_empty());
    assert_eq!(offset(&s, &loc, None).await.status, 404);
}

/// A request and the status and error code it must get.
type Case = (
    Method,
    String,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_requests_are_4xx_with_json_never_5xx() {
    let s = TestServer::start().await;
    let loc = create(&s, 100, None).await;
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![("upload-length", "5")],
            vec![],
            412,
            "tus_version",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![("tus-resumable", "0.2.2"), ("upload-length", "5")],
            vec![],
            412,
            "tus_version",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![TUS],
            vec![],
            400,
            "invalid_header",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![TUS, ("upload-length", "-1")],
            vec![],
            400,
            "invalid_header",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![TUS, ("upload-length", "abc")],
            vec![],
            400,
            "invalid_header",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![TUS, ("upload-length", "99999999999999")],
            vec![],
            413,
            "input_too_large",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![TUS, ("upload-length", "5"), ("upload-defer-length", "1")],
            vec![],
            400,
            "invalid_header",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![
                TUS,
                ("upload-length", "5"),
                ("upload-metadata", "k not*base64"),
            ],
            vec![],
            400,
            "invalid_header",
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            vec![TUS, ("upload-length", "5"), OCTETS],
            b"hello".to_vec(),
            400,
            "creation_with_upload_unsupported",
        ),
        (
            Method::PATCH,
            loc.clone(),
            vec![TUS, ("upload-offset", "0")],
            b"x".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::PATCH,
            loc.clone(),
            vec![TUS, OCTETS],
            b"x".to_vec(),
            400,
            "invalid_header",
        ),
        (
            Method::PATCH,
            loc.clone(),
            vec![TUS, OCTETS, ("upload-offset", "x")],
            b"x".to_vec(),
            400,
            "invalid_header",
        ),
        (
            Method::PATCH,
            loc.clone(),
            vec![TUS, OCTETS, ("upload-offset", "101")],
            b"x".to_vec(),
            413,
            "past_upload_length",
        ),
        (
            Method::PATCH,
            loc.clone(),
            vec![OCTETS, ("upload-offset", "0")],
            b"x".to_vec(),
            412,
            "tus_version",
        ),
        (
            Method::PATCH,
            "/v1/uploads/nonsense".into(),
            vec![TUS, OCTETS, ("upload-offset", "0")],
            b"x".to_vec(),
            404,
            "not_found",
        ),
        (
            Method::PATCH,
            "/v1/uploads/gcp.01J00000000000000000000000".into(),
            vec![TUS, OCTETS, ("upload-offset", "0")],
            b"x".to_vec(),
            404,
            "not_found",
        ),
        (
            Method::PATCH,
            "/v1/uploads/local.01J00000000000000000000000".into(),
            vec![TUS, OCTETS, ("upload-offset", "0")],
            b"x".to_vec(),
            404,
            "not_found",
        ),
        (
            Method::DELETE,
            "/v1/uploads/local..%2F..%2Fx".into(),
            vec![TUS],
            vec![],
            404,
            "not_found",
        ),
        (
            Method::GET,
            loc.clone(),
            vec![TUS],
            vec![],
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, headers, body, want, code) in cases {
        let mut req = s.http.request(method.clone(), s.url(&path));
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = req.body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let tv = r.headers().get("tus-version").is_some();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(
            (status, v["error"]["code"].as_str().unwrap_or("")),
            (want, code),
            "{method} {path} {headers:?}: {v}"
        );
        assert_eq!(ct.as_deref(), Some("application/json"), "{method} {path}");
        if want == 412 {
            assert!(tv, "412 carries Tus-Version");
        }
    }
    // Nothing of it changed the upload.
    assert_eq!(offset(&s, &loc, None).await.header("upload-offset"), "0");
    // Job specs naming uploads wrongly are 422, naming the field.
    for bad in ["nonsense", "gcp.01J00000000000000000000000"] {
        let (st, body) = submit(&s, bad, None).await;
        assert_eq!(st, 422, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("input.upload"));
    }
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(
            r#"{"input":{"upload":"x","url":"https://a/b.mp4"},"outputs":[{"preset":"mp4-360p"}]}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

fn mint(key: &SigningKey, owner: &str, scopes: &[Scope]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let new = NewClaims {
        owner: Some(owner.into()),
        scopes: scopes.to_vec(),
        name: "test".into(),
        ttl_seconds: None,
    };
    issue(key, &new, now).unwrap().0
}

#[tokio::test]
async fn one_tenant_cannot_see_patch_delete_or_use_anothers_upload() {
    let dir = tempfile::tempdir().unwrap();
    let (key, file) = SigningKey::generate("k1").unwrap();
    let trusted = dir.path().join("trusted.keys");
    std::fs::write(&trusted, format!("{}\n", key.trusted_line())).unwrap();
    std::fs::set_permissions(&trusted, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(file);
    let s = TestServer::start_with(move |c| c.trusted_keys = Some(trusted)).await;
    let alice = mint(&key, "alice", &[Scope::Submit, Scope::Read]);
    let alice_read = mint(&key, "alice", &[Scope::Read]);
    let bob = mint(&key, "bob", &[Scope::Submit, Scope::Read]);

    // Without a token: 401, as everywhere in /v1.
    let r = s
        .http
        .post(s.url("/v1/uploads"))
        .header(TUS.0, TUS.1)
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let loc = create(&s, 10, Some(&alice)).await;
    assert_eq!(offset(&s, &loc, Some(&bob)).await.status, 404);
    assert_eq!(patch(&s, &loc, 0, &[1; 10], Some(&bob)).await.status, 404);
    assert_eq!(
        call(&s, Method::DELETE, &loc, &[TUS], Some(&bob), vec![])
            .await
            .status,
        404
    );
    // Reading needs read, writing needs submit.
    assert_eq!(offset(&s, &loc, Some(&alice_read)).await.status, 200);
    let r = s
        .http
        .patch(s.url(&loc))
        .bearer_auth(&alice_read)
        .header(TUS.0, TUS.1)
        .header(OCTETS.0, OCTETS.1)
        .header("upload-offset", "0")
        .body(vec![1; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    assert_eq!(patch(&s, &loc, 0, &[1; 10], Some(&alice)).await.status, 204);
    let (st, body) = submit(&s, id_of(&loc), Some(&bob)).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("input_not_found"))
    );
    // Bob's attempt left it usable by Alice.
    assert_eq!(
        offset(&s, &loc, Some(&alice)).await.header("upload-offset"),
        "10"
    );
}
