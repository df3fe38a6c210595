//! Delete and retention (issue 15 part 3): after `DELETE /v1/jobs/{id}` and after expiry no
//! object of the job is left, in local storage and in S3 (s3s-fs, a real S3 server that checks
//! signatures); another tenant's DELETE is a 404 that deletes nothing; deleting twice is 204.

mod common;

use common::*;
use reelay_protocol::{JobStatus, JobView};
use reelay_server::auth::{issue_token, Scope};
use reelay_server::retention::{sweep_once, Retention};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SPEC: &str = r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"thumbnail"}]}"#;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Every file under `root` (recursively) whose path names `job`.
fn files_of(root: &Path, job: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(job) {
                out.push(p);
            }
        }
    }
    out
}

async fn token(s: &TestServer) -> String {
    issue_token(&*s.state.store, "test", &[Scope::Submit, Scope::Read])
        .await
        .unwrap()
        .token
}

async fn submit_as(s: &TestServer, t: &str, clip: &Path) -> JobView {
    let form = reqwest::multipart::Form::new()
        .text("spec", SPEC.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(clip).unwrap()).file_name("c.mp4"),
        );
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .bearer_auth(t)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: JobView = r.json().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let j = view_as(s, t, &job.id).await;
        if j.status.is_terminal() {
            assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
            return j;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn view_as(s: &TestServer, t: &str, id: &str) -> JobView {
    let r = s
        .http
        .get(s.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn delete_as(s: &TestServer, t: &str, id: &str) -> (u16, String) {
    let r = s
        .http
        .delete(s.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Objects of `job` as the server's storage lists them (inputs, outputs, task intermediates).
async fn objects_of(s: &TestServer, job: &JobView) -> Vec<String> {
    let mut keys = Vec::new();
    for prefix in ["inputs", "outputs", "tasks"] {
        for o in s.state.storage.list(prefix).await.unwrap() {
            if o.key.contains(&job.id) {
                keys.push(o.key);
            }
        }
    }
    keys
}

/// The whole story on one server; `root` is where its objects lie on disk.
async fn delete_and_expire(s: &TestServer, root: &Path) {
    let alice = token(s).await;
    let bob = token(s).await;
    let clip = clip(s.dir.path(), "c.mp4", 320, 240, 1.0, true);

    // DELETE: Bob cannot reach Alice's job, Alice deletes it, twice.
    let job = submit_as(s, &alice, &clip).await;
    assert!(!objects_of(s, &job).await.is_empty());
    let on_disk = files_of(root, &job.id);
    assert!(on_disk.len() >= 3, "input, probe and outputs: {on_disk:?}");
    let (st, body) = delete_as(s, &bob, &job.id).await;
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("not_found"), "{body}");
    assert_eq!(
        files_of(root, &job.id),
        on_disk,
        "a refused DELETE deletes nothing"
    );
    let (st, body) = delete_as(s, &alice, &job.id).await;
    assert_eq!((st, body.as_str()), (204, ""));
    assert_eq!(objects_of(s, &job).await, Vec::<String>::new());
    assert_eq!(files_of(root, &job.id), Vec::<PathBuf>::new());
    let tomb = view_as(s, &alice, &job.id).await;
    assert_eq!(
        tomb.status,
        JobStatus::Succeeded,
        "the tombstone keeps its status"
    );
    assert!(
        tomb.deleted_at.is_some() && tomb.outputs.is_empty(),
        "{tomb:?}"
    );
    let r = s
        .http
        .get(s.url(&format!("/v1/jobs/{}/outputs/mp4-360p.mp4", job.id)))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a deleted output is gone");
    assert_eq!(delete_as(s, &alice, &job.id).await.0, 204, "idempotent");
    assert_eq!(delete_as(s, &bob, &job.id).await.0, 404);

    // Expiry with the default policy: after 8 days the input goes, after 31 days everything.
    // Two sweepers (two replicas) race each round; each job is cleaned once.
    let job = submit_as(s, &alice, &clip).await;
    let policy = Retention::default();
    let (store, storage) = (&*s.state.store, &s.state.storage);
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        sweep_once(store, storage, &policy, now, 10).await.unwrap(),
        0
    );
    let later = now + 8 * DAY_MS;
    let (a, b) = tokio::join!(
        sweep_once(store, storage, &policy, later, 10),
        sweep_once(store, storage, &policy, later, 10)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1, "one replica cleaned it");
    let left = objects_of(s, &job).await;
    assert!(left.iter().all(|k| k.starts_with("outputs/")), "{left:?}");
    assert!(left.iter().any(|k| k.ends_with("mp4-360p.mp4")));
    let r = s
        .http
        .get(s.url(&format!("/v1/jobs/{}/outputs/mp4-360p.mp4", job.id)))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "outputs outlive the input");
    let bytes = r.bytes().await.unwrap();
    assert!(ffprobe_bytes(&bytes, "mp4").duration() > 0.5);

    let much_later = now + 31 * DAY_MS;
    let (a, b) = tokio::join!(
        sweep_once(store, storage, &policy, much_later, 10),
        sweep_once(store, storage, &policy, much_later, 10)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    assert_eq!(objects_of(s, &job).await, Vec::<String>::new());
    assert_eq!(files_of(root, &job.id), Vec::<PathBuf>::new());
    let tomb = view_as(s, &alice, &job.id).await;
    assert!(tomb.deleted_at.is_some() && tomb.outputs.is_empty());
    assert_eq!(
        sweep_once(store, storage, &policy, much_later, 10)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn delete_and_expiry_leave_nothing_in_local_storage() {
    let s = TestServer::start().await;
    let root = s.state.cfg.data_dir.join("storage");
    delete_and_expire(&s, &root).await;
    // Not even empty directories of the deleted jobs are left.
    for top in ["inputs", "outputs", "tasks"] {
        let left: Vec<_> = std::fs::read_dir(root.join(top))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[tokio::test]
async fn the_sweeper_runs_on_its_own() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, false);
    let job = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"thumbnail"}]}"#)
        .await;
    let policy = Retention {
        outputs_seconds: 1,
        sweep_interval_seconds: 1,
        ..Retention::default()
    };
    tokio::spawn(reelay_server::retention::run_sweeper(
        s.state.store.clone(),
        s.state.storage.clone(),
        policy,
        s.state.stopping.clone(),
    ));
    let j = s
        .wait_for(&job.id, Duration::from_secs(20), |j| j.deleted_at.is_some())
        .await;
    assert!(j.outputs.is_empty());
    assert!(files_of(&s.state.cfg.data_dir.join("storage"), &job.id).is_empty());
}

struct S3(Child);
impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn delete_and_expiry_leave_nothing_in_s3() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("media")).unwrap();
    let bin = std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
    let _s3 = S3(Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "reelaytestkey",
            "--secret-key",
            "reelaytestsecret1234",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}); `make test` installs it")));
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // The only test of this binary that touches the environment; the local ones ignore it.
    std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"));
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "reelaytestkey");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "reelaytestsecret1234");
    std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
    let s = TestServer::start_with(|c| c.storage = Some("s3://media/reelay".into())).await;
    delete_and_expire(&s, &root.join("media/reelay")).await;
}
