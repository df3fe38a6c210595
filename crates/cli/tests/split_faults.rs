//! Faults of a split job across real processes: one `reelay api` and two `reelay worker`
//! processes (one slot each) on one store (the api's SQLite file and local storage), so that the
//! tasks of one job run on two workers at once, each with its own ffmpeg. A worker is killed
//! with SIGKILL in the middle of a segment; a piece is corrupted so that its segment fails for
//! good; a job is cancelled while both workers encode it. Every check is on what a user or an
//! operator sees: the job view, its tasks' attempts, the ffmpeg processes (by pid), the files
//! in storage, the stitched output (ffprobe).

use reelay_protocol::{JobStatus, JobView};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{ffmpegs_of, frames, free_port, http, keyed_clip, pid_alive, wait_until, Server, BIN};

/// An api and its workers on one data directory.
struct Cluster {
    data: PathBuf,
    api: Server,
    workers: Vec<Server>,
}

impl Cluster {
    fn start(dir: &Path, workers: usize) -> Cluster {
        let data = dir.join("data");
        let api = role("api", &data);
        let workers = (0..workers).map(|_| role("worker", &data)).collect();
        Cluster { data, api, workers }
    }

    fn job(&self, id: &str) -> JobView {
        http()
            .get(format!("{}/v1/jobs/{id}", self.api.base))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn wait_for(&self, id: &str, timeout: Duration, pred: impl Fn(&JobView) -> bool) -> JobView {
        let deadline = Instant::now() + timeout;
        loop {
            let j = self.job(id);
            if pred(&j) {
                return j;
            }
            assert!(Instant::now() < deadline, "job never matched; last {j:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn submit(&self, file: &Path, spec: &str) -> String {
        let form = reqwest::blocking::multipart::Form::new()
            .text("spec", spec.to_string())
            .file("file", file)
            .unwrap();
        let r = http()
            .post(format!("{}/v1/jobs", self.api.base))
            .multipart(form)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
        r.json::<JobView>().unwrap().id
    }

    /// Files left under the job's intermediate prefix (pieces, encoded ranges, audio).
    fn intermediates(&self, job: &str) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut stack = vec![self.data.join("storage/tasks").join(job)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

fn role(role: &str, data: &Path) -> Server {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([role, "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(["--workers", "1", "--lease-seconds", "2"])
        .env("RUST_LOG", "warn");
    Server::spawn(cmd, port)
}

const SPEC: &str =
    r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"hls-abr"}],"split":{"segment_seconds":2}}"#;

#[test]
fn kill_9_of_a_worker_mid_segment_reruns_only_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let input = keyed_clip(dir.path(), "long.mp4", "320x180", 16);
    let mut c = Cluster::start(dir.path(), 2);
    let id = c.submit(&input, SPEC);
    let victim = c.workers[0].child.id();
    // The moment the first worker's ffmpeg encodes a range, kill that worker.
    let (ffmpeg, key) = wait_until(
        "worker 0 to encode a segment",
        Duration::from_secs(60),
        || {
            ffmpegs_of(victim, &id)
                .into_iter()
                .find(|(_, k)| k.starts_with("seg-"))
        },
    );
    let killed = format!("{id}.{key}");
    let mut w = c.workers.remove(0);
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    drop(w);
    // Its ffmpeg dies with it: no orphan goes on encoding the range.
    wait_until(
        "the killed worker's ffmpeg to exit",
        Duration::from_secs(5),
        || (!pid_alive(ffmpeg)).then_some(()),
    );

    let j = c.wait_for(&id, Duration::from_secs(180), |j| j.status.is_terminal());
    assert_eq!(j.status, JobStatus::Succeeded, "{j:#?}");
    let ranges = j
        .tasks
        .iter()
        .filter(|t| t.kind == "encode_segment")
        .count();
    // 16 s in ranges of the HLS ladder's 4-second segments.
    assert_eq!(ranges, 4, "{:#?}", j.tasks);
    for t in &j.tasks {
        assert_eq!(t.status, "succeeded", "{t:?}");
        let want = if t.id == killed { 2 } else { 1 };
        assert_eq!(
            t.attempts, want,
            "only the killed range ({killed}) ran again: {:#?}",
            j.tasks
        );
    }
    // The stitched output has every frame, the re-run range's included.
    let mp4 = j.outputs.iter().find(|o| o.name == "mp4-360p.mp4").unwrap();
    let bytes = http()
        .get(format!("{}{}", c.api.base, mp4.url))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(frames(&bytes), 16 * 25);
    // Its HLS played early: the intermediates stay the VOD grace (2 × target duration + margin).
    wait_until("intermediates removed", Duration::from_secs(40), || {
        c.intermediates(&id).is_empty().then_some(())
    });
}

#[test]
fn a_segment_failing_for_good_fails_the_job_with_its_code_and_cancels_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let input = keyed_clip(dir.path(), "long.mp4", "320x180", 24);
    // One worker: ranges run in order, so the last piece is read well after it is corrupted.
    let c = Cluster::start(dir.path(), 1);
    let id = c.submit(&input, SPEC);
    c.wait_for(&id, Duration::from_secs(60), |j| {
        j.tasks
            .iter()
            .any(|t| t.kind == "split" && t.status == "succeeded")
    });
    let mut pieces: Vec<PathBuf> = c
        .intermediates(&id)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/split/"))
        .collect();
    pieces.sort();
    assert!(pieces.len() >= 5, "{pieces:?}");
    // Not a transport stream any more: no attempt can decode it.
    let last = pieces.last().unwrap();
    std::fs::write(last, vec![0x42u8; 64 * 1024]).unwrap();

    let j = c.wait_for(&id, Duration::from_secs(120), |j| j.status.is_terminal());
    assert_eq!(j.status, JobStatus::Failed, "{j:#?}");
    let failed: Vec<_> = j.tasks.iter().filter(|t| t.status == "failed").collect();
    assert_eq!(failed.len(), 1, "{:#?}", j.tasks);
    let seg = failed[0];
    assert_eq!(seg.kind, "encode_segment", "{:#?}", j.tasks);
    let err = j.error.as_ref().expect("the job's error");
    // The segment's own code: its ffmpeg could not read the piece (exit 1, not retried).
    assert_eq!(err.code, "transcode_failed", "{err:?}");
    assert!(
        err.message.contains(&seg.id),
        "names the segment's files: {err:?}"
    );
    // Permanent: one attempt, not retried.
    assert_eq!(seg.attempts, 1, "{:#?}", j.tasks);
    // Everything not done is cancelled (the stitch never ran), nothing is left running.
    for t in &j.tasks {
        assert!(
            ["succeeded", "cancelled", "failed"].contains(&t.status.as_str()),
            "{t:?}"
        );
    }
    assert!(j
        .tasks
        .iter()
        .any(|t| t.kind == "stitch" && t.status == "cancelled"));
    assert!(j.outputs.is_empty(), "{:?}", j.outputs);
    wait_until("pieces removed", Duration::from_secs(10), || {
        c.intermediates(&id).is_empty().then_some(())
    });
}

#[test]
fn cancel_stops_the_job_on_every_worker_and_removes_the_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let input = keyed_clip(dir.path(), "long.mp4", "640x360", 40);
    let c = Cluster::start(dir.path(), 2);
    let id = c.submit(&input, SPEC);
    // Both workers run an ffmpeg of this job at the same time.
    let running: Vec<(u32, String)> = wait_until(
        "both workers to encode the job",
        Duration::from_secs(90),
        || {
            let all: Vec<Vec<(u32, String)>> = c
                .workers
                .iter()
                .map(|w| ffmpegs_of(w.child.id(), &id))
                .collect();
            all.iter().all(|f| !f.is_empty()).then(|| all.concat())
        },
    );
    let r = http()
        .post(format!("{}/v1/jobs/{id}/cancel", c.api.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    // Each worker learns it at its next lease renewal (≤ 1 s) and kills its ffmpeg.
    wait_until(
        "every ffmpeg of the job to exit",
        Duration::from_secs(5),
        || running.iter().all(|(p, _)| !pid_alive(*p)).then_some(()),
    );
    let j = c.wait_for(&id, Duration::from_secs(10), |j| j.status.is_terminal());
    assert_eq!(j.status, JobStatus::Cancelled);
    // Nothing of the job runs or starts again on any worker.
    std::thread::sleep(Duration::from_secs(2));
    for w in &c.workers {
        assert_eq!(ffmpegs_of(w.child.id(), &id), vec![], "worker {}", w.base);
    }
    let j = c.job(&id);
    for t in &j.tasks {
        assert!(
            t.status == "cancelled" || t.status == "succeeded",
            "{:#?}",
            j.tasks
        );
    }
    wait_until("pieces removed", Duration::from_secs(10), || {
        c.intermediates(&id).is_empty().then_some(())
    });
}
