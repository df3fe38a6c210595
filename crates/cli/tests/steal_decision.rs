//! Who steals what (issue 16, part 2), end to end with real processes: two `reelay serve`
//! clusters with one worker slot each, `reelay edge` (with its nginx and `[auth]`) in front,
//! real ffmpeg. gcp's workers ask the edge (`[steal] edge`) instead of asking aws in turn, so a
//! task moves only when the edge's `[stealing]` policy says the wait it saves pays for its
//! transfer.
//!
//! aws's one slot is held by a job whose input URL never answers (60 s estimated, so its next
//! task would wait about a minute at home); a small upload queues behind it. While gcp is busy
//! too, while the transfer is priced above the wait, and while the edge's patience is longer
//! than that wait, nothing moves; once the price and the patience drop (edge.toml reloaded),
//! gcp's idle worker takes exactly that task and it succeeds on aws.

use reelay_protocol::{JobView, StealDecision};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use common::stack::{cluster, Stack, Tokens};
use common::{free_port, http, signed_token, wait_until, ClusterEntry, Edge};

/// `[auth]` with the test's keys and `[stealing]` pricing a GB of egress at `usd_per_gb`: a
/// move must save 5 s after its transfer and egress, and the head must wait `min_wait`
/// seconds in all.
fn edge_extra(trusted: &Path, usd_per_gb: f64, min_wait: u32) -> String {
    format!(
        "[auth]\ntrusted_keys = {trusted:?}\n\n[stealing]\nenabled = true\n\
         min_seconds_saved = 5\negress_usd_per_gb = {usd_per_gb:?}\n\
         min_wait_seconds = {min_wait}\n",
        trusted = trusted.display().to_string()
    )
}

/// `GET /edge/steal?thief=…` through nginx, with `token`.
fn ask(s: &Stack, thief: Option<&str>, token: Option<&str>) -> reqwest::blocking::Response {
    let mut r = http().get(s.edge().url("/edge/steal"));
    if let Some(t) = thief {
        r = r.query(&[("thief", t)]);
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().unwrap()
}

/// Waits until the edge's decision for gcp stays home for `reason`.
fn wait_reason(s: &Stack, reason: &str) {
    wait_until(
        &format!("the edge to answer {reason}"),
        Duration::from_secs(15),
        || {
            let d: StealDecision = ask(s, Some("gcp"), Some(&s.tokens.peer)).json().ok()?;
            (d.from.is_none() && d.reason.as_deref() == Some(reason)).then_some(())
        },
    );
}

/// `reelay_edge_steal_decisions_total{outcome}` from the edge's metrics.
fn decisions(s: &Stack, outcome: &str) -> u64 {
    let text = http()
        .get(format!("{}/edge/metrics", s.edge().control()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("reelay_edge_steal_decisions_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// One cluster's card on the edge's `/edge/status`.
fn card(s: &Stack, name: &str) -> reelay_edge::status::ClusterStatus {
    s.edge()
        .status()
        .clusters
        .into_iter()
        .find(|c| c.name == name)
        .unwrap()
}

/// `reelay_steal_asks_total{outcome}` from gcp's metrics: its idle slot's asks.
fn asks(s: &Stack, outcome: &str) -> u64 {
    let prefix = format!("reelay_steal_asks_total{{outcome=\"{outcome}\"}} ");
    s.metrics(s.gcp())
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[test]
fn an_idle_gcp_worker_takes_a_waiting_aws_task_only_when_the_edge_says_it_pays() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = Tokens::mint(d);
    let aws = cluster(d, "aws", free_port(), &tokens.aws_config(0.5));
    let edge = Edge::unstarted(d);
    let steal = format!("poll_ms = 200\nedge = \"{}\"\n", edge.base());
    let gcp_toml = tokens.gcp_config(&steal, &aws.base(), "");
    let trusted = tokens.trusted.clone();
    let mut s = Stack::new(d, tokens, aws, Some(edge));
    s.start_gcp(&gcp_toml);
    let clusters: [ClusterEntry; 2] = [("aws", s.aws.base(), 1), ("gcp", s.gcp().base(), 1)];
    // Egress priced at $100,000 per GB: any transfer costs more than a minute's wait.
    let edge = s.edge.as_mut().unwrap();
    std::fs::write(
        &edge.config,
        edge.toml(&clusters, &edge_extra(&trusted, 100_000.0, 30)),
    )
    .unwrap();
    edge.restart();

    // The decision endpoint: the asking cluster's own peer token, nothing else.
    assert_eq!(ask(&s, Some("gcp"), None).status(), 401);
    assert_eq!(ask(&s, Some("gcp"), Some(&s.tokens.user)).status(), 403);
    assert_eq!(
        ask(&s, Some("aws"), Some(&s.tokens.peer)).status(),
        403,
        "gcp's token"
    );
    assert_eq!(ask(&s, None, Some(&s.tokens.peer)).status(), 400);
    let azure = signed_token(d, "azure", &["peer"]);
    let r = ask(&s, Some("azure"), Some(&azure));
    assert_eq!(r.status(), 404);
    assert!(r.text().unwrap().contains("unknown_cluster"));
    wait_reason(&s, "nothing_ready");

    // Balanced: both slots busy, a task waiting at aws. gcp has no idle slot: nothing moves.
    let aws_stall = s.occupy(&s.aws);
    let gcp_stall = s.occupy(s.gcp());
    let clip = common::clip(d, "clip.mp4", "160x120", 1, false);
    let id = s.submit_upload(&s.aws, &clip);
    wait_reason(&s, "thief_busy");
    std::thread::sleep(Duration::from_secs(2));
    let j = s.job(&s.aws, &id);
    assert_eq!(
        (j.status.as_str(), j.tasks[0].ran_on.as_deref()),
        ("queued", None)
    );

    // gcp idles, but the transfer is priced above the minute aws's queue would wait: gcp's
    // worker asks (the edge counts its answers) and takes nothing. The round robin without
    // an edge would have taken it 0.5 s after it was ready.
    s.cancel(s.gcp(), &gcp_stall);
    wait_reason(&s, "not_worth_it");
    let asked = decisions(&s, "not_worth_it");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        decisions(&s, "not_worth_it") > asked,
        "gcp's idle worker did not ask the edge"
    );
    assert_eq!(decisions(&s, "steal"), 0);
    let j = s.job(&s.aws, &id);
    assert_eq!(
        (j.status.as_str(), j.tasks[0].ran_on.as_deref()),
        ("queued", None),
        "a task moved although its transfer costs more than it saves"
    );
    // The operator's view says why: gcp's card on /edge/status carries the edge's last
    // answer to its idle slot, given within the worker's poll.
    let gcp = card(&s, "gcp");
    let answer = gcp
        .steal_answer
        .expect("gcp's card without its last answer");
    assert_eq!(answer.answer.reason.as_deref(), Some("not_worth_it"));
    assert!(answer.age_ms < 5_000, "{answer:?}");
    // And gcp's own metrics count its slot's asks that the edge answered with "stay".
    assert!(asks(&s, "stay") > 0);
    assert_eq!(asks(&s, "claimed"), 0);

    // Egress free (a private interconnect), but a patience of 10 minutes: the minute aws's
    // head waits is ordinary queueing, and it stays.
    let r = s
        .edge()
        .reconfigure(&s.edge().toml(&clusters, &edge_extra(&trusted, 0.0, 600)));
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    wait_reason(&s, "short_wait");
    let asked = decisions(&s, "short_wait");
    std::thread::sleep(Duration::from_secs(2));
    assert!(decisions(&s, "short_wait") > asked);
    assert_eq!(decisions(&s, "steal"), 0);
    assert_eq!(s.job(&s.aws, &id).tasks[0].ran_on.as_deref(), None);

    // And a patience of 30 s: the wait pays, the edge names the task, and gcp's worker
    // claims exactly it.
    let r = s
        .edge()
        .reconfigure(&s.edge().toml(&clusters, &edge_extra(&trusted, 0.0, 30)));
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    let job = s.wait_status(&s.aws, &id, "succeeded", Duration::from_secs(60));
    assert_eq!(job.cluster, "aws");
    assert_eq!(job.tasks[0].ran_on.as_deref(), Some("gcp"));
    assert_eq!(job.tasks[0].attempts, 1);
    assert!(decisions(&s, "steal") >= 1);
    // gcp took from aws, so aws's card says it takes nothing from gcp for the cooldown (60 s
    // by default) and gcp's says nothing of the kind.
    let cooled = card(&s, "aws").steal_cooldowns;
    assert_eq!(cooled.len(), 1, "{cooled:?}");
    assert_eq!(cooled[0].cluster, "gcp");
    assert!(cooled[0].seconds_left > 0.0 && cooled[0].seconds_left <= 60.0);
    assert!(card(&s, "gcp").steal_cooldowns.is_empty());
    assert_eq!(asks(&s, "claimed"), 1);
    // The stalled job never moved: it runs at home.
    assert_eq!(
        s.job(&s.aws, &aws_stall).tasks[0].ran_on.as_deref(),
        Some("aws")
    );
    s.cancel(&s.aws, &aws_stall);
}

/// The claim the edge's decision leads to, on the owner's api: `task_id` claims exactly that
/// task or nothing, and a release says whether the attempt began (one that never got its
/// inputs may move again; one that began stays home).
#[test]
fn a_claim_names_its_task_and_an_unstarted_release_lets_it_move_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = Tokens::mint(d);
    let aws = cluster(d, "aws", free_port(), &tokens.aws_config(0.2));
    // gcp is this test itself, claiming as the peer.
    let s = Stack::new(d, tokens, aws, None);
    let stall = s.occupy(&s.aws);
    let clip = common::clip(d, "clip.mp4", "160x120", 1, false);
    let first = s.submit_upload(&s.aws, &clip);
    let second = s.submit_upload(&s.aws, &clip);
    let claim = |task: Option<&str>, worker: &str| s.peer_claim(worker, task);
    let release = |task: &str, worker: &str, began: Option<bool>| {
        let mut body = serde_json::json!({ "worker": worker, "attempt": 1 });
        if let Some(b) = began {
            body["began"] = b.into();
        }
        let r = http()
            .post(format!("{}/v1/peer/tasks/{task}/release", s.aws.base()))
            .bearer_auth(&s.tokens.peer)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    };
    // The second job's task, although the first is older.
    let task = format!("{second}.transcode");
    let got: serde_json::Value = wait_until("the named task", Duration::from_secs(10), || {
        let r = claim(Some(&task), "w1");
        (r.status() == 200).then(|| r.json().unwrap())
    });
    assert_eq!(got["task_id"], task.as_str());
    assert_eq!(claim(Some(&task), "w2").status(), 204, "taken: not another");
    assert_eq!(
        s.job(&s.aws, &second).tasks[0].ran_on.as_deref(),
        Some("gcp")
    );
    // Its inputs never arrived: handed back as never begun, it may move again.
    release(&task, "w1", Some(false));
    assert_eq!(s.job(&s.aws, &second).tasks[0].ran_on, None);
    // (Claimable at home again from the release on: offered after offer_after_seconds.)
    wait_until(
        "the released task to move again",
        Duration::from_secs(10),
        || (claim(Some(&task), "w3").status() == 200).then_some(()),
    );
    // Released after it began (the default): home only from now on.
    release(&task, "w3", None);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(claim(Some(&task), "w4").status(), 204);
    assert_eq!(
        s.job(&s.aws, &second).tasks[0].ran_on.as_deref(),
        Some("gcp")
    );
    // Without a task id: the oldest one offered.
    let any: serde_json::Value = claim(None, "w5").json().unwrap();
    assert_eq!(any["task_id"], format!("{first}.transcode").as_str());
    s.cancel(&s.aws, &stall);
}

/// Split pieces move (issue 16: "a long film's pieces spread over both clouds"): a split job
/// on aws, whose one slot cuts and stitches, has its ranges encoded by both clusters' workers
/// (gcp's asks aws in turn, `[steal]` without an edge), and the stitched file is whole: every
/// frame, decode timestamps increasing.
#[test]
fn a_split_jobs_pieces_are_encoded_by_both_clusters_and_stitch_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = Tokens::mint(d);
    let aws = cluster(d, "aws", free_port(), &tokens.aws_config(0.3));
    let gcp_toml = tokens.gcp_config("poll_ms = 100\n", &aws.base(), "");
    let mut s = Stack::new(d, tokens, aws, None);
    s.start_gcp(&gcp_toml);
    let input = common::keyed_clip(d, "film.mp4", "320x180", 16);
    let form = reqwest::blocking::multipart::Form::new()
        .text(
            "spec",
            r#"{"outputs":[{"preset":"mp4-360p"}],"split":{"segment_seconds":2}}"#,
        )
        .file("file", &input)
        .unwrap();
    let r = http()
        .post(format!("{}/v1/jobs", s.aws.base()))
        .bearer_auth(&s.tokens.user)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let id = r.json::<JobView>().unwrap().id;
    let job = s.wait_status(&s.aws, &id, "succeeded", Duration::from_secs(180));
    let ran_on = |kind: &str, cluster: &str| {
        job.tasks
            .iter()
            .filter(|t| t.kind == kind && t.ran_on.as_deref() == Some(cluster))
            .count()
    };
    let segments = job
        .tasks
        .iter()
        .filter(|t| t.kind == "encode_segment")
        .count();
    assert!(segments >= 4, "{:?}", job.tasks);
    eprintln!(
        "split pieces: {} of {segments} encoded on gcp, {} on aws",
        ran_on("encode_segment", "gcp"),
        ran_on("encode_segment", "aws")
    );
    assert!(ran_on("encode_segment", "gcp") >= 1, "{:?}", job.tasks);
    assert!(ran_on("encode_segment", "aws") >= 1, "{:?}", job.tasks);
    // Only pieces move: the split and the stitch stay home.
    for kind in ["split", "stitch"] {
        assert_eq!(ran_on(kind, "gcp"), 0, "{kind}: {:?}", job.tasks);
    }
    assert!(job.tasks.iter().all(|t| t.attempts == 1), "{:?}", job.tasks);

    let out = &job.outputs[0];
    let bytes = s.download(&s.aws, &out.url).bytes().unwrap();
    assert_eq!(common::frames(&bytes), 16 * 25, "every frame, once");
    let file = d.join("stitched.mp4");
    std::fs::write(&file, &bytes).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=dts", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .unwrap();
    let dts: Vec<i64> = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert_eq!(dts.len(), 16 * 25);
    assert!(
        dts.windows(2).all(|w| w[0] < w[1]),
        "decode timestamps go back"
    );
}
