//! The real `reelay` binary as separate processes: crash safety (kill -9, restart), SIGTERM
//! draining, and the CLI client end to end against a running server.

use reelay_protocol::{JobList, JobStatus, JobView};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{free_port, reelay, signal, Server, BIN};

fn serve(data: &Path, port: u16, extra: &[&str]) -> Server {
    start_role("serve", data, port, extra)
}

fn start_role(role: &str, data: &Path, port: u16, extra: &[&str]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args([role, "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(["--workers", "1", "--lease-seconds", "2"])
        .args(extra)
        .env("RUST_LOG", "info");
    Server::spawn(cmd, port)
}

fn job(base: &str, id: &str) -> JobView {
    reqwest::blocking::get(format!("{base}/v1/jobs/{id}"))
        .unwrap()
        .json()
        .unwrap()
}

fn wait_for(base: &str, id: &str, timeout: Duration, pred: impl Fn(&JobView) -> bool) -> JobView {
    let deadline = Instant::now() + timeout;
    loop {
        let j = job(base, id);
        if pred(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "job never matched; last {j:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A clip with sound (the jobs below encode audio too).
fn clip(dir: &Path, name: &str, size: &str, secs: u32) -> PathBuf {
    common::clip(dir, name, size, secs, true)
}

fn cli(base: &str, args: &[&str]) -> Output {
    reelay(base, None, args)
}

fn submit(base: &str, file: &Path, preset: &str) -> String {
    let out = cli(
        base,
        &[
            "submit",
            file.to_str().unwrap(),
            "--preset",
            preset,
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: JobView = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    v.id
}

fn ffprobe_codec(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.webm");
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&f)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// The jobs below are 20 s of 320x240 VP9 (several seconds of encoding) so that a signal surely
// lands mid-encode; everything else in the suite uses clips of 2 s or less.

#[test]
fn kill_9_mid_job_then_restart_runs_it_again_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = clip(dir.path(), "long.mp4", "320x240", 20);
    let port = free_port();
    let mut s = serve(&data, port, &[]);
    let id = submit(&s.base, &input, "webm-vp9-720p");
    wait_for(&s.base, &id, Duration::from_secs(30), |j| {
        j.status == JobStatus::Running && j.progress > 0.0
    });
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    drop(s);
    // Its ffmpeg dies with it (no orphan keeps encoding the job).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Command::new("pgrep")
        .args(["-f", &id])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "an ffmpeg of the killed server is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let s = serve(&data, port, &[]);
    let j = wait_for(&s.base, &id, Duration::from_secs(120), |j| {
        j.status.is_terminal()
    });
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    assert_eq!(
        j.attempts, 2,
        "the killed attempt counts, the second one finished"
    );
    let list: JobList = reqwest::blocking::get(format!("{}/v1/jobs", s.base))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list.jobs.len(), 1, "nothing duplicated");
    let bytes = reqwest::blocking::get(format!("{}{}", s.base, j.outputs[0].url))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(bytes.len() as u64, j.outputs[0].size);
    assert_eq!(ffprobe_codec(&bytes), "vp9");
    // Only the successful attempt's outputs exist in storage.
    let attempts: Vec<_> = std::fs::read_dir(data.join("storage/outputs").join(&id))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(attempts, vec![std::ffi::OsString::from("a2")]);
}

#[test]
fn sigterm_lets_the_running_job_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = clip(dir.path(), "c.mp4", "320x240", 8);
    let port = free_port();
    let mut s = serve(&data, port, &["--shutdown-grace-seconds", "60"]);
    let id = submit(&s.base, &input, "webm-vp9-720p");
    wait_for(&s.base, &id, Duration::from_secs(30), |j| {
        j.status == JobStatus::Running
    });
    signal(&s.child, "-TERM");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "clean exit after draining: {status:?}");
    drop(s);
    let s = serve(&data, port, &[]);
    let j = job(&s.base, &id);
    assert_eq!((j.status, j.attempts), (JobStatus::Succeeded, 1), "{j:?}");
}

/// A rolling update of the api must not cut an upload half way: after SIGTERM the listener
/// closes (no new connections), an open SSE stream ends, and the request in flight completes
/// with its 202 before the process exits.
#[test]
fn sigterm_lets_an_upload_in_flight_finish() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = clip(dir.path(), "c.mp4", "160x120", 1);
    let port = free_port();
    // The api role has no workers: jobs stay queued, so the SSE stream below stays open.
    let mut s = start_role("api", &data, port, &["--shutdown-grace-seconds", "30"]);
    let queued = submit(&s.base, &input, "mp4-360p");

    let mut sse = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        sse,
        "GET /v1/jobs/{queued}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut sse = BufReader::new(sse);
    let mut first = String::new();
    sse.read_line(&mut first).unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    let file = std::fs::read(&input).unwrap();
    let boundary = "reelaytestboundary";
    let mut body = Vec::new();
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n\
         {{\"outputs\":[{{\"preset\":\"mp4-360p\"}}]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.mp4\"\r\n\
         Content-Type: video/mp4\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(&file);
    write!(body, "\r\n--{boundary}--\r\n").unwrap();
    let mut up = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        up,
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let half = body.len() / 2;
    up.write_all(&body[..half]).unwrap();
    up.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    signal(&s.child, "-TERM");
    // The listener closes; the SSE stream ends (its body finishes) instead of holding the exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sse.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    sse.read_to_end(&mut rest)
        .expect("the SSE stream ends after SIGTERM");
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "exited with an upload in flight"
    );

    // The other half arrives after the signal: the upload still becomes a job.
    up.write_all(&body[half..]).unwrap();
    up.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    let json = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let accepted: JobView = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let status = s.child.wait().unwrap();
    assert!(
        status.success(),
        "clean exit once the upload is done: {status:?}"
    );
    drop(s);

    // Both jobs are in the store; a server with workers runs them.
    let s = serve(&data, port, &[]);
    for id in [&queued, &accepted.id] {
        let j = wait_for(&s.base, id, Duration::from_secs(60), |j| {
            j.status.is_terminal()
        });
        assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    }
}

#[test]
fn sigterm_past_the_grace_period_hands_the_job_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = clip(dir.path(), "long.mp4", "320x240", 20);
    let port = free_port();
    let mut s = serve(&data, port, &["--shutdown-grace-seconds", "1"]);
    let id = submit(&s.base, &input, "webm-vp9-720p");
    wait_for(&s.base, &id, Duration::from_secs(30), |j| {
        j.status == JobStatus::Running && j.progress > 0.0
    });
    let t = Instant::now();
    signal(&s.child, "-TERM");
    assert!(s.child.wait().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "exit within the grace period plus cleanup"
    );
    drop(s);
    let s = serve(&data, port, &[]);
    // Released, not failed: it is queued again at once (no lease to wait for) and not counted.
    let j = wait_for(&s.base, &id, Duration::from_secs(120), |j| {
        j.status.is_terminal()
    });
    assert_eq!((j.status, j.attempts), (JobStatus::Succeeded, 1), "{j:?}");
}

#[test]
fn cli_submit_wait_status_download_presets() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "c.mp4", "160x120", 1);
    let s = serve(&dir.path().join("data"), free_port(), &[]);

    let out = cli(
        &s.base,
        &[
            "submit",
            input.to_str().unwrap(),
            "--preset",
            "mp4-360p",
            "--preset",
            "hls-abr",
            "--wait",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "submit --wait: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout
        .split_whitespace()
        .find(|w| w.starts_with("local."))
        .expect("job id printed")
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '.')
        .to_string();
    assert!(
        stdout.contains("/outputs/mp4-360p.mp4"),
        "says where the outputs are: {stdout}"
    );

    let out = cli(&s.base, &["status", &id, "--json"]);
    assert!(out.status.success());
    let v: JobView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.status, JobStatus::Succeeded);
    let out = cli(&s.base, &["status", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded"));

    let to = dir.path().join("out");
    let out = cli(&s.base, &["download", &id, "--to", to.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "download: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = std::fs::read(to.join("mp4-360p.mp4")).unwrap();
    let remote = reqwest::blocking::get(format!("{}/v1/jobs/{id}/outputs/mp4-360p.mp4", s.base))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        local,
        remote.to_vec(),
        "downloaded bytes equal the served bytes"
    );
    assert!(to.join("hls-abr/master.m3u8").is_file());
    assert!(std::fs::read_dir(to.join("hls-abr/v0")).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "ts")));

    let out = cli(&s.base, &["presets"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hls-abr"));

    // Failures: a clear message and a non-zero exit.
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let out = cli(
        &s.base,
        &["submit", empty.to_str().unwrap(), "--preset", "mp4-360p"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty_input"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&s.base, &["status", "local.01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(out.status.code(), Some(1));
    let out = cli("http://127.0.0.1:9", &["presets"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// `reelay cancel` never deletes (409-like failure once ended); `reelay delete` removes a
/// finished job's files and leaves a tombstone; `--cancel` stops a running job first.
#[test]
fn cli_cancel_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = clip(dir.path(), "c.mp4", "160x120", 1);
    let s = serve(&data, free_port(), &[]);
    let id = submit(&s.base, &input, "mp4-360p");
    wait_for(&s.base, &id, Duration::from_secs(60), |j| {
        j.status == JobStatus::Succeeded
    });
    let storage = data.join("storage");
    let files = |id: &str| {
        ["inputs", "outputs"]
            .iter()
            .filter(|p| storage.join(p).join(id).exists())
            .flat_map(|p| std::fs::read_dir(storage.join(p).join(id)).unwrap())
            .count()
    };
    assert!(files(&id) > 0);
    let out = cli(&s.base, &["cancel", &id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an ended job cannot be cancelled"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already_finished"));
    assert!(files(&id) > 0, "cancel deleted nothing");
    let out = cli(&s.base, &["delete", &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deleted"), "{stdout}");
    assert_eq!(files(&id), 0);
    let v = job(&s.base, &id);
    assert!(v.deleted_at.is_some() && v.outputs.is_empty(), "{v:?}");
    assert!(cli(&s.base, &["delete", &id]).status.success(), "twice");

    // A long job, deleted while it runs: cancelled, then its files deleted.
    let long = clip(dir.path(), "long.mp4", "160x120", 30);
    let id = submit(&s.base, &long, "webm-vp9-720p");
    wait_for(&s.base, &id, Duration::from_secs(30), |j| {
        j.status == JobStatus::Running
    });
    let out = cli(&s.base, &["delete", &id, "--cancel"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cancelled and deleted"), "{stdout}");
    let v = job(&s.base, &id);
    assert_eq!(v.status, JobStatus::Cancelled);
    assert!(v.deleted_at.is_some());
    assert_eq!(files(&id), 0);
    let out = cli(&s.base, &["delete", "local.01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}
