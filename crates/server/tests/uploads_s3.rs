//! Resumable uploads on S3 (s3s-fs on loopback, signatures checked): create-only commits,
//! concurrent PATCHes at one offset, chunks in multipart parts, and the assembled input byte for
//! byte. The same protocol as `tests/uploads.rs`, on the other back end.

mod common;

use common::TestServer;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct S3(Child);

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const KEY: &str = "reelaytestkey";
const SECRET: &str = "reelaytestsecret1234";

/// s3s-fs on a free port with bucket `media`; returns the guard and the endpoint.
fn s3s_fs(dir: &std::path::Path) -> (S3, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = dir.join("s3");
    std::fs::create_dir_all(root.join("media")).unwrap();
    let bin = std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", KEY, "--secret-key", SECRET])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}); `make test` installs s3s-fs"));
    let guard = S3(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (guard, format!("http://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("s3s-fs did not start");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn uploads_on_s3_commit_once_per_offset_and_assemble_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_s3, endpoint) = s3s_fs(dir.path());
    // One test function in this binary touches the environment, before any server starts.
    std::env::set_var("AWS_ENDPOINT", &endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
    std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");

    let s = TestServer::start_with(|c| c.storage = Some("s3://media/reelay".into())).await;
    // The commit primitive itself: the store refuses a second create of one key.
    assert!(s
        .state
        .storage
        .put_if_absent("probe/once", b"a".to_vec())
        .await
        .unwrap());
    assert!(
        !s.state
            .storage
            .put_if_absent("probe/once", b"b".to_vec())
            .await
            .unwrap(),
        "the S3 server must refuse a second If-None-Match: * write"
    );

    let piece = 9usize << 20; // more than one 8 MiB multipart part per PATCH
    let len = 2 * piece;
    let r = s
        .http
        .post(s.url("/v1/uploads"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let id = loc.rsplit('/').next().unwrap().to_string();

    let mut tasks = Vec::new();
    for n in 0..4u8 {
        let (http, url) = (s.http.clone(), s.url(&loc));
        tasks.push(tokio::spawn(async move {
            let r = http
                .patch(url)
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
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
    assert_eq!(
        winners.len(),
        1,
        "exactly one PATCH at offset 0 commits on S3"
    );
    let r = s
        .http
        .patch(s.url(&loc))
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", piece.to_string())
        .body(vec![7u8; piece])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["upload-offset"], len.to_string().as_str());

    let up = reelay_server::api::uploads::uploads(&s.state);
    let info = up.load(&id, |_| true, now_ms()).await.unwrap();
    up.take(&info, "local.01J00000000000000000000000", "check/assembled")
        .await
        .unwrap();
    let got = std::fs::read(dir.path().join("s3/media/reelay/check/assembled")).unwrap();
    assert_eq!(got.len(), len);
    assert!(got[..piece].iter().all(|&b| b == winners[0]));
    assert!(got[piece..].iter().all(|&b| b == 7));
    let chunks = s
        .state
        .storage
        .list(&format!("uploads/{id}/chunks"))
        .await
        .unwrap();
    assert_eq!(
        chunks.len(),
        2,
        "the losers' chunks are deleted: {chunks:?}"
    );
    up.delete(&id).await.unwrap();
    assert!(s.state.storage.list("uploads").await.unwrap().is_empty());
}
