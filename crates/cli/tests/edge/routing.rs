//! One API through the edge: jobs routed to the cluster that owns them, the unchanged CLI,
//! SSE and Range passing through, merged listings (and saying when one misses a cluster), JSON
//! errors from nginx itself, and `reelay up` starting and stopping the whole topology.

use crate::common::{
    clip, get_json_error, http, pid_alive, wait_until, TwoClouds, Up, UpPorts, BIN,
};
use reelay_edge::health::Health;
use reelay_edge::EdgeStatus;
use reelay_protocol::{JobList, JobStatus, JobView};
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn routing_streaming_listing_and_json_errors_through_the_edge() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let clouds = TwoClouds::start(dir.path());
    let (aws, gcp, edge, stall) = (&clouds.aws, &clouds.gcp, &clouds.edge, &clouds.stall);
    let base = edge.base();
    let client = http();

    // The unchanged CLI, pointed at the edge: multipart upload, SSE-following --wait.
    let input = clip(dir.path(), "clip.mp4", "160x120", 1, true);
    let out = Command::new(BIN)
        .args([
            "submit",
            input.to_str().unwrap(),
            "--preset",
            "mp4-360p",
            "--metadata",
            "order_id=A-1",
            "--wait",
            "--json",
        ])
        .env("REELAY_SERVER", &base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: JobView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    // The job's context survived the edge both ways.
    assert_eq!(
        job.metadata.get("order_id").map(String::as_str),
        Some("A-1")
    );
    let input = job.input.clone().expect("input");
    assert_eq!(input.name.as_deref(), Some("clip.mp4"));
    assert_eq!((input.width, input.height), (Some(160), Some(120)));

    // SSE through nginx: the stream of a finished job ends with its final state.
    let events = client
        .get(format!("{base}/v1/jobs/{}/events", job.id))
        .send()
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let last_data = BufReader::new(events)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with("data:"))
        .last()
        .unwrap();
    assert!(last_data.contains("succeeded"), "{last_data}");

    // Range passes through.
    let r = client
        .get(format!("{base}{}", job.outputs[0].url))
        .header("range", "bytes=10-109")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.headers()["content-range"]
        .to_str()
        .unwrap()
        .starts_with("bytes 10-109/"));
    assert_eq!(r.bytes().unwrap().len(), 100);

    // One request id, from the edge, on every answer.
    let r = client.get(format!("{base}/v1/presets")).send().unwrap();
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1);

    // The merged list: newest first across clusters, paged with the edge's cursor.
    let mut all = vec![job.id.clone()];
    for i in 0..4 {
        let c = if i % 2 == 0 { &aws } else { &gcp };
        all.push(c.submit_direct(stall));
        std::thread::sleep(Duration::from_millis(5));
    }
    all.reverse();
    let page1: JobList = client
        .get(format!("{base}/v1/jobs?limit=3"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let cursor = page1.next_cursor.clone().expect("a second page");
    let page2: JobList = client
        .get(format!("{base}/v1/jobs?limit=3&cursor={cursor}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let listed: Vec<String> = page1
        .jobs
        .iter()
        .chain(&page2.jobs)
        .map(|j| j.id.clone())
        .collect();
    assert_eq!(listed, all, "newest first, no gaps or duplicates");
    assert_eq!(page2.next_cursor, None);
    let failed: JobList = client
        .get(format!("{base}/v1/jobs?status=succeeded"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(failed.jobs.len(), 1);
    // Metadata filters reach every cluster; only the CLI's job carries this order id.
    for query in ["metadata.order_id=A-1", "metadata%5Border_id%5D=A-1"] {
        let found: JobList = client
            .get(format!("{base}/v1/jobs?{query}"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let ids: Vec<&str> = found.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, [job.id.as_str()], "{query}");
    }
    // A key no job can have matches nothing, on every cluster.
    let none: JobList = client
        .get(format!("{base}/v1/jobs?metadata.a%20b=x"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(none.jobs.is_empty() && !none.partial, "{none:?}");
    let out = Command::new(BIN)
        .args(["list", "--metadata", "order_id=A-1"])
        .env("REELAY_SERVER", &base)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the one job:\n{table}");
    assert!(
        lines[0].contains("NAME") && lines[0].contains("DURATION"),
        "{table}"
    );
    assert!(
        lines[1].contains(&job.id)
            && lines[1].contains("clip.mp4")
            && lines[1].contains("0:01")
            && lines[1].ends_with("mp4-360p"),
        "{table}"
    );
    let (status, _, body) = get_json_error(&client, &format!("{base}/v1/jobs?status=done"));
    assert_eq!((status, body.error.code.as_str()), (400, "invalid_query"));

    // JSON errors from nginx itself.
    let (status, _, body) = get_json_error(
        &client,
        &format!("{base}/v1/jobs/azure.01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    );
    assert_eq!((status, body.error.code.as_str()), (404, "unknown_cluster"));
    let (status, _, _) = get_json_error(&client, &format!("{base}/nope"));
    assert_eq!(status, 404);
    let (status, _, _) = get_json_error(&client, &format!("{base}/v1/jobs/not-a-job"));
    assert_eq!(status, 404);
    // A cluster's own errors pass through untouched.
    let (status, _, body) = get_json_error(
        &client,
        &format!("{base}/v1/jobs/aws.01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    );
    assert_eq!((status, body.error.code.as_str()), (404, "not_found"));

    // Status and metrics through nginx.
    let s: EdgeStatus = client
        .get(format!("{base}/edge/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(s.clusters.len(), 2);
    assert!(!s.fail_open);
    let m = client
        .get(format!("{base}/edge/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for needle in [
        "reelay_edge_cluster_up{cluster=\"aws\"} 1",
        "reelay_edge_placements_total{cluster=",
        "reelay_edge_reload_failures_total 0",
        "reelay_edge_reload_duration_seconds_count",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
    let log = edge.access_log();
    assert!(log.contains("\"upstream_addr\":\"127.0.0.1:"), "{log}");
    eprintln!("routing test took {:?}", t0.elapsed());
}

/// Finding 9 of issue 12: with a cluster down, the merged listing left its jobs out without a
/// word (no marker in the JSON, `reelay list` exited 0). A listing that misses a cluster says
/// so: `partial` and `missing_clusters` in the JSON (and the header), a warning from the CLI,
/// and a non-zero exit with `--strict`.
#[test]
fn a_listing_that_misses_a_cluster_says_so() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut clouds = TwoClouds::start(dir.path());
    let (gcp, edge, stall) = (&clouds.gcp, &clouds.edge, &clouds.stall);
    let on_aws = clouds.aws.submit_direct(stall);
    let on_gcp = gcp.submit_direct(stall);
    let client = http();
    let list = |client: &reqwest::blocking::Client| {
        let r = client
            .get(format!("{}/v1/jobs", edge.base()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let header = r
            .headers()
            .get("x-reelay-missing-clusters")
            .map(|v| v.to_str().unwrap().to_string());
        let v: serde_json::Value = r.json().unwrap();
        (v, header)
    };
    let (whole, header) = list(&client);
    assert_eq!(whole["partial"], false, "{whole}");
    assert_eq!(whole["missing_clusters"], serde_json::json!([]), "{whole}");
    assert_eq!(header, None);
    let reelay_list = |args: &[&str]| {
        Command::new(BIN)
            .arg("list")
            .args(args)
            .env("REELAY_SERVER", edge.base())
            .output()
            .unwrap()
    };
    let out = reelay_list(&["--strict"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    clouds.aws.kill9();
    // Both ways of missing a cluster: it fails to answer (just killed), and the edge knows it
    // is down and does not ask it.
    let (v, header) = list(&client);
    assert_eq!(v["partial"], true, "{v}");
    assert_eq!(v["missing_clusters"], serde_json::json!(["aws"]), "{v}");
    assert_eq!(header.as_deref(), Some("aws"));
    wait_until("aws to be marked down", Duration::from_secs(10), || {
        let s = edge.status();
        (s.clusters.iter().find(|c| c.name == "aws")?.health == Health::Down).then_some(())
    });
    let (v, header) = list(&client);
    let listed: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![on_gcp.as_str()], "{v}");
    assert_eq!(v["partial"], true, "{v}");
    assert_eq!(v["missing_clusters"], serde_json::json!(["aws"]), "{v}");
    assert_eq!(header.as_deref(), Some("aws"));
    let typed: JobList = serde_json::from_value(v).unwrap();
    assert!(typed.partial);

    // The CLI: the table and a warning; --json carries the marker; --strict fails.
    let out = reelay_list(&[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&on_gcp) && !stdout.contains(&on_aws),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning") && stderr.contains("aws"),
        "{stderr}"
    );
    let out = reelay_list(&["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["partial"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("aws"));
    let out = reelay_list(&["--strict"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "--strict fails on a partial listing"
    );
    assert!(stderr.contains("aws"), "{stderr}");
    eprintln!("partial-listing test took {:?}", t0.elapsed());
}

#[test]
fn up_starts_everything_and_leaves_nothing_behind() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ports = UpPorts::free();
    let UpPorts {
        edge: edge_port,
        control,
        aws: aws_port,
        gcp: gcp_port,
    } = ports;
    let topology = ports.topology((3, 1), (3, 1), "", "");
    // Waits for "reelay is up" and keeps the banner after it.
    let mut up = Up::start(dir.path(), ports, &topology, 6);
    let banner = up.banner.clone();
    assert!(
        banner[0].contains(&format!("http://127.0.0.1:{edge_port}")),
        "{banner:?}"
    );

    let client = http();
    // Protected by default: nothing anonymous gets through the edge, nor to a cluster directly;
    // the admin token it wrote (owner-only) does.
    let token_path = dir.path().join("state/admin.token");
    assert!(
        banner
            .iter()
            .any(|l| l.contains(token_path.to_str().unwrap())),
        "{banner:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token is {mode:o}");
    let admin = std::fs::read_to_string(&token_path).unwrap();
    for base in [edge_port, aws_port, gcp_port] {
        let url = format!("http://127.0.0.1:{base}/v1/presets");
        assert_eq!(client.get(&url).send().unwrap().status(), 401, "{url}");
    }
    let r = client
        .get(format!("http://127.0.0.1:{edge_port}/v1/presets"))
        .bearer_auth(admin.trim())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let nginx: u32 = std::fs::read_to_string(dir.path().join("state/edge/nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(nginx));

    let status = up.stop();
    assert!(status.success(), "{status:?}");
    assert!(!pid_alive(nginx), "nginx left behind");
    for port in [edge_port, control, aws_port, gcp_port] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something still listens on {port}"
        );
    }
    eprintln!("up test took {:?}", t0.elapsed());
}
