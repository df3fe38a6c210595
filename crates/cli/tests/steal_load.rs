//! The cluster's `/v1/load` report under work stealing (issue 16), end to end with a real
//! `reelay serve` and real ffmpeg: what the edge's stealing policy and placement read must be
//! true while tasks move.
//!
//! - A task a peer's worker claimed holds none of the owner's slots; once the peer stops
//!   renewing and the lease lapses, it is queued work at home, not a slot about to free.
//! - A split piece's steal offer carries the bytes of the pieces its range reads, not the
//!   whole film's.
//!
//! The peer here is a plain HTTP client with a `peer` token: what a peer's worker sends, with
//! no second cluster needed to show what the owner reports.

use reelay_protocol::{JobView, LoadReport};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use common::{http, keygen, signed_token, stall_server, wait_until, Cluster};

struct Owner {
    aws: Cluster,
    /// submit + read, owner `team`.
    user: String,
    /// gcp's peer token.
    peer: String,
}

impl Owner {
    /// aws with one worker slot (2 s leases, the test clusters' default), offering tasks to
    /// peers once they waited `offer_after` seconds.
    fn start(d: &Path, offer_after: f64) -> Owner {
        let trusted = keygen(d);
        let aws = Cluster::start_with_config(
            d,
            "aws",
            "127.0.0.1",
            1,
            &format!(
                "trusted_keys = {:?}\n[steal]\noffer_after_seconds = {offer_after:?}\n",
                trusted.display().to_string()
            ),
        );
        Owner {
            aws,
            user: signed_token(d, "team", &["submit", "read"]),
            peer: signed_token(d, "gcp", &["peer"]),
        }
    }

    fn load(&self) -> LoadReport {
        http()
            .get(format!("{}/v1/load", self.aws.base()))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn job(&self, id: &str) -> JobView {
        http()
            .get(format!("{}/v1/jobs/{id}", self.aws.base()))
            .bearer_auth(&self.user)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn cancel(&self, id: &str) {
        let r = http()
            .post(format!("{}/v1/jobs/{id}/cancel", self.aws.base()))
            .bearer_auth(&self.user)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// A job whose input URL never answers, holding aws's one slot.
    fn submit_stall(&self) -> String {
        let r = http()
            .post(format!("{}/v1/jobs", self.aws.base()))
            .bearer_auth(&self.user)
            .json(&common::job_spec(&stall_server()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        let id = r.json::<JobView>().unwrap().id;
        wait_until(
            "the stalled job to hold aws's slot",
            Duration::from_secs(20),
            || (self.job(&id).status.as_str() == "running").then_some(()),
        );
        id
    }

    fn submit_upload(&self, file: &Path) -> String {
        let out = Command::new(common::BIN)
            .args(["submit"])
            .arg(file)
            .args(["--preset", "mp4-360p", "--json"])
            .env("REELAY_SERVER", self.aws.base())
            .env("REELAY_TOKEN", &self.user)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<JobView>(&out.stdout).unwrap().id
    }
}

/// aws's one slot holds a stalled job; a second job's task is claimed by gcp's worker. aws
/// reports one running task (its own slot), not two with one capacity. gcp's worker then
/// vanishes without a word: once the lease lapses the task is queued at aws (counted, with a
/// backlog), not a running task with 0 s left that reads as a slot about to free. When aws's
/// slot frees, the task runs at home and succeeds once.
#[test]
fn a_task_on_a_peer_holds_no_home_slot_and_a_lapsed_one_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = Owner::start(d, 0.2);
    let stall = s.submit_stall();
    let clip = common::clip(d, "clip.mp4", "160x120", 1, false);
    let id = s.submit_upload(&clip);
    let task = format!("{id}.transcode");
    wait_until("gcp's claim of the task", Duration::from_secs(10), || {
        let r = http()
            .post(format!("{}/v1/peer/tasks/claim", s.aws.base()))
            .bearer_auth(&s.peer)
            .json(&serde_json::json!({ "worker": "w1", "task_id": task }))
            .send()
            .unwrap();
        (r.status() == 200).then_some(())
    });
    let j = s.job(&id);
    assert_eq!(
        (j.status.as_str(), j.tasks[0].ran_on.as_deref()),
        ("running", Some("gcp"))
    );

    // Under gcp's live lease (2 s, just claimed): aws runs only its own stalled task.
    let load = s.load();
    assert_eq!(
        (load.capacity, load.running, load.queued),
        (1, 1, 0),
        "{load:?}"
    );
    assert_eq!(load.running_remaining_seconds.len(), 1, "{load:?}");

    // gcp never renews: past the lease the task is queued work at aws.
    let lapsed = wait_until(
        "the lapsed peer attempt to count as queued",
        Duration::from_secs(10),
        || Some(s.load()).filter(|l| l.queued == 1),
    );
    assert_eq!(lapsed.running, 1, "{lapsed:?}");
    assert_eq!(lapsed.running_remaining_seconds.len(), 1, "{lapsed:?}");
    assert!(lapsed.backlog_seconds > 0.0, "{lapsed:?}");
    // It moved once: it is offered to no peer again.
    assert_eq!(lapsed.offer, None, "{lapsed:?}");

    s.cancel(&stall);
    let done = wait_until(
        "the task to succeed at home",
        Duration::from_secs(60),
        || {
            let j = s.job(&id);
            assert_ne!(j.status.as_str(), "failed", "{:?}", j.error);
            (j.status.as_str() == "succeeded").then_some(j)
        },
    );
    assert_eq!(done.tasks[0].ran_on.as_deref(), Some("aws"));
    assert_eq!(done.tasks[0].attempts, 2);
    let idle = s.load();
    assert_eq!((idle.running, idle.queued), (0, 0), "{idle:?}");
}

/// A 16 s film split into 2 s ranges on aws's one slot: while its pieces wait, aws offers one
/// to peers. The offer's bytes are the pieces that range reads (a fraction of the film) and its
/// output estimate is that much per split rendition, not the whole film's size twice over.
#[test]
fn a_pieces_offer_carries_its_pieces_bytes_not_the_films() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = Owner::start(d, 0.1);
    let input = common::keyed_clip(d, "film.mp4", "320x180", 16);
    let film_bytes = std::fs::metadata(&input).unwrap().len();
    let form = reqwest::blocking::multipart::Form::new()
        .text(
            "spec",
            r#"{"outputs":[{"preset":"mp4-360p"}],"split":{"segment_seconds":2}}"#,
        )
        .file("file", &input)
        .unwrap();
    let r = http()
        .post(format!("{}/v1/jobs", s.aws.base()))
        .bearer_auth(&s.user)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let id = r.json::<JobView>().unwrap().id;
    let offer = wait_until(
        "aws to offer one of the film's pieces",
        Duration::from_secs(120),
        || {
            let load = s.load();
            // Only the pieces may move (the split, audio and stitch stay home).
            if let Some(o) = load.offer {
                return Some(o);
            }
            let j = s.job(&id);
            assert!(
                !matches!(j.status.as_str(), "failed" | "succeeded"),
                "the job ended before a piece was offered: {:?}",
                j.tasks
            );
            std::thread::sleep(Duration::from_millis(20));
            None
        },
    );
    eprintln!(
        "piece offer {}: {} B in, {} B out; the film is {film_bytes} B",
        offer.task_id, offer.input_bytes, offer.output_bytes
    );
    assert!(offer.input_bytes > 0, "{offer:?}");
    assert!(
        offer.input_bytes * 2 < film_bytes,
        "a 2 s range of a 16 s film reads {} of its {film_bytes} bytes",
        offer.input_bytes
    );
    assert_eq!(offer.output_bytes, offer.input_bytes, "one split rendition");
    // The open report names the task by a handle that shows nothing of the tenant's job; a
    // peer's claim naming the handle gets exactly that piece, and a forged one nothing.
    assert!(
        reelay_protocol::is_offer_handle(&offer.task_id) && !offer.task_id.contains(&id),
        "{offer:?}"
    );
    let claim = |task: &str| {
        http()
            .post(format!("{}/v1/peer/tasks/claim", s.aws.base()))
            .bearer_auth(&s.peer)
            .json(&serde_json::json!({ "worker": "w1", "task_id": task }))
            .send()
            .unwrap()
    };
    assert_eq!(claim("o_Zm9yZ2Vk").status(), 204, "a forged handle");
    let taken = claim(&offer.task_id);
    assert_eq!(
        taken.status(),
        200,
        "the offered piece, claimed by its handle"
    );
    let taken: serde_json::Value = taken.json().unwrap();
    let piece = taken["task_id"].as_str().unwrap().to_string();
    assert!(piece.starts_with(&format!("{id}.seg")), "{taken}");
    assert_eq!(
        s.job(&id)
            .tasks
            .iter()
            .find(|t| t.id == piece)
            .and_then(|t| t.ran_on.clone())
            .as_deref(),
        Some("gcp")
    );
    // Never renewed, the claim lapses and the piece runs at home.
    wait_until("the split job to succeed", Duration::from_secs(180), || {
        let j = s.job(&id);
        assert_ne!(j.status.as_str(), "failed", "{:?}", j.error);
        (j.status.as_str() == "succeeded").then_some(())
    });
}
