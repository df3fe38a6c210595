//! The S3 back end against a real S3-compatible server that checks signatures (s3s-fs on
//! loopback; `make test` installs it).

mod common;

use common::*;
use reelay_protocol::{JobStatus, JobView};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct S3 {
    child: Child,
    root: std::path::PathBuf,
    endpoint: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY: &str = "reelaytestkey";
const SECRET: &str = "reelaytestsecret1234";

fn s3s_fs(dir: &std::path::Path) -> S3 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = dir.join("s3");
    std::fs::create_dir_all(root.join("media")).unwrap();
    let bin = std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
    let child = Command::new(&bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            KEY,
            "--secret-key",
            SECRET,
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin} ({e}); `make test` installs it with cargo install s3s-fs")
        });
    // Owned by the guard from here on, so it is killed and reaped whatever happens next.
    let s3 = S3 {
        child,
        root,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return s3;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("s3s-fs did not start");
}

fn set_aws_env(endpoint: &str, secret: &str) {
    // One test function per binary touches the environment, before any server starts.
    std::env::set_var("AWS_ENDPOINT", endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", secret);
    std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
}

#[tokio::test]
async fn s3_storage_end_to_end_with_signatures_multipart_and_presigned_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = s3s_fs(dir.path());

    // Wrong secret: every request is refused, so the storage check (and /readyz) fails.
    set_aws_env(&s3.endpoint, "wrong-secret-000000");
    let bad = reelay_server::storage::Storage::open(Some("s3://media/reelay"), dir.path()).unwrap();
    assert!(
        bad.check().await.is_err(),
        "a bad signature must be refused by the server"
    );

    set_aws_env(&s3.endpoint, SECRET);
    let st = reelay_server::storage::Storage::open(Some("s3://media/reelay"), dir.path()).unwrap();
    st.check().await.unwrap();
    // A 20 MiB object goes up as a multipart upload and comes back byte for byte.
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    st.put_file("blobs/big.bin", &big).await.unwrap();
    assert_eq!(
        std::fs::read(s3.root.join("media/reelay/blobs/big.bin"))
            .unwrap()
            .len(),
        data.len()
    );
    let back = dir.path().join("back.bin");
    st.get_to_file("blobs/big.bin", &back).await.unwrap();
    assert!(std::fs::read(&back).unwrap() == data);

    let s = TestServer::start_with(|c| {
        c.storage = Some("s3://media/reelay".into());
        c.presign_downloads = true;
        c.key_input_prefix = Some("incoming".into());
    })
    .await;
    assert_eq!(
        s.http.get(s.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let clip = clip(s.dir.path(), "c.mp4", 320, 240, 1.0, true);
    let job = s
        .succeeded(
            &clip,
            r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"thumbnail"}]}"#,
        )
        .await;
    let on_disk = s3
        .root
        .join("media/reelay/outputs")
        .join(&job.id)
        .join("a1/mp4-360p.mp4");
    assert!(
        on_disk.is_file(),
        "the output is in the bucket: {}",
        on_disk.display()
    );
    assert!(s3
        .root
        .join("media/reelay/inputs")
        .join(&job.id)
        .join("source")
        .is_file());

    // Downloads are redirects to presigned URLs the S3 server accepts.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(s.url(&job.outputs[0].url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&s3.endpoint) && loc.contains("X-Amz-Signature"),
        "{loc}"
    );
    let bytes = reqwest::get(&loc).await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, job.outputs[0].size);
    assert_eq!(
        ffprobe_bytes(&bytes, "mp4").codec("video").as_deref(),
        Some("h264")
    );
    let tampered = loc.replace("X-Amz-Signature=", "X-Amz-Signature=00");
    assert!(!reqwest::get(&tampered).await.unwrap().status().is_success());

    // An input already in the bucket, named by key (under key_input_prefix; open mode reads any
    // key there).
    std::fs::create_dir_all(s3.root.join("media/reelay/incoming")).unwrap();
    std::fs::copy(&clip, s3.root.join("media/reelay/incoming/clip.mp4")).unwrap();
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .json(&serde_json::json!({"input": {"key": "incoming/clip.mp4"}, "outputs": [{"preset": "audio-aac"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let j: JobView = r.json().await.unwrap();
    let j = s.wait(&j.id, Duration::from_secs(60)).await;
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .json(&serde_json::json!({"input": {"key": "incoming/missing.mp4"}, "outputs": [{"preset": "audio-aac"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}
