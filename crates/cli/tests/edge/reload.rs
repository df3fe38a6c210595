//! Changing what the edge routes to while it serves: a cluster name that moves to a new
//! address, an edge.toml that is refused (the old one keeps serving), reloads under load, and
//! `status_allow` applied by a reload.

use crate::common::{get_json_error, http, kill, wait_until, Cluster, Edge, TwoClouds};
use reelay_protocol::ErrorBody;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_cluster_name_that_moves_is_followed_without_restarts() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stall = crate::common::stall_server();
    // Two incarnations of "aws" on the same port, on two loopback addresses.
    let old = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let mut new = Cluster {
        name: "aws".into(),
        ip: "127.0.0.2".into(),
        port: old.port,
        data: dir.path().join("aws-new"),
        workers: 1,
        grace: 1,
        config: None,
        child: None,
    };
    new.restart();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 aws.reelay.test\n").unwrap();
    let edge = Edge::start(
        dir.path(),
        &[("aws", format!("http://aws.reelay.test:{}", old.port), 1)],
        &format!("hosts_file = \"{}\"", hosts.display()),
    );
    let client = http();
    let first = edge.submit(&client, &stall).unwrap();
    assert_eq!(
        client
            .get(format!("{}/v1/jobs/{first}", old.base()))
            .send()
            .unwrap()
            .status(),
        200
    );
    let generation = edge.status().generation;

    std::fs::write(&hosts, "# moved\n127.0.0.2 aws.reelay.test\n").unwrap();
    wait_until(
        "the edge to follow the new address",
        Duration::from_secs(10),
        || {
            let s = edge.status();
            (s.clusters[0].addresses == vec![format!("127.0.0.2:{}", old.port)]
                && s.generation > generation
                && s.last_reload.as_ref()?.ok)
                .then_some(())
        },
    );
    let second = edge.submit(&client, &stall).unwrap();
    assert_eq!(
        client
            .get(format!("{}/v1/jobs/{second}", new.base()))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{}/v1/jobs/{second}", old.base()))
            .send()
            .unwrap()
            .status(),
        404
    );
    eprintln!("address-change test took {:?}", t0.elapsed());
}

#[test]
fn a_bad_configuration_is_refused_and_the_old_one_keeps_serving() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let clusters = [("aws", aws.base(), 1)];
    let edge = Edge::start(dir.path(), &clusters, "");
    let client = http();
    let presets = || {
        client
            .get(format!("{}/v1/presets", edge.base()))
            .send()
            .unwrap()
            .status()
    };
    let good = edge.toml(&clusters, "");
    let before = edge.status();
    let live_conf = std::fs::read_to_string(edge.dir.join("work/nginx.conf")).unwrap();

    // Invalid TOML value: refused before anything is rendered.
    let r = edge.reconfigure(&good.replace(
        "reload_min_interval_ms",
        "client_max_body_size = \"lots\"\nreload_min_interval_ms",
    ));
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<ErrorBody>().unwrap().error.code, "invalid_config");
    let s = edge.status();
    assert!(
        s.config_error
            .as_deref()
            .unwrap_or("")
            .contains("client_max_body_size"),
        "{s:?}"
    );
    assert_eq!(s.generation, before.generation);
    assert_eq!(presets(), 200);

    // Valid TOML, but nginx -t rejects the rendered file: the live file and process stay.
    let r = edge.reconfigure(&good.replace(
        "reload_min_interval_ms",
        "nginx_http_snippet = \"this_is_not_a_directive on;\"\nreload_min_interval_ms",
    ));
    assert_eq!(r.status(), 422);
    let err = r.json::<ErrorBody>().unwrap().error;
    assert_eq!(err.code, "reload_failed");
    assert!(err.message.contains("unknown directive"), "{}", err.message);
    let s = edge.status();
    assert_eq!(s.generation, before.generation);
    assert_eq!(s.failed_reloads, before.failed_reloads + 1);
    assert!(!s.last_reload.as_ref().unwrap().ok);
    assert_eq!(
        std::fs::read_to_string(edge.dir.join("work/nginx.conf")).unwrap(),
        live_conf
    );
    assert_eq!(s.nginx.pid, before.nginx.pid);
    assert_eq!(presets(), 200);

    // A good file through SIGHUP applies (and a 1 MiB limit now answers 413 in JSON).
    std::fs::write(
        &edge.config,
        good.replace(
            "reload_min_interval_ms",
            "client_max_body_size = \"1m\"\nreload_min_interval_ms",
        ),
    )
    .unwrap();
    kill(edge.child.as_ref().unwrap().id(), "-HUP");
    wait_until("the good file to apply", Duration::from_secs(10), || {
        let s = edge.status();
        (s.generation > before.generation && s.config_error.is_none()).then_some(())
    });
    let r = client
        .post(format!("{}/v1/jobs", edge.base()))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<ErrorBody>().unwrap().error.code, "too_large");
    eprintln!("bad-config test took {:?}", t0.elapsed());
}

#[test]
fn reloads_under_load_drop_no_request() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let clouds = TwoClouds::start(dir.path());
    let edge = &clouds.edge;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let url = format!("{}/v1/presets", edge.base());
            std::thread::spawn(move || {
                let client = http();
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).send() {
                        Ok(r) if r.status() == 200 => match r.bytes() {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(format!("body: {e:?}")),
                        },
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let before = edge.status().generation;
    let control = http();
    for _ in 0..6 {
        let r = control
            .post(format!("{}/edge/reload?force=true", edge.control()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    let s = edge.status();
    eprintln!(
        "{ok} requests during {} reloads, {} failed",
        s.generation - before,
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 50, "{ok}");
    // At least the forced ones (a health change may add its own).
    assert!(s.generation >= before + 6, "{} -> {}", before, s.generation);
    let hist = http()
        .get(format!("{}/edge/metrics", edge.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        hist.contains(&format!("reelay_edge_reloads_total {}", s.reloads)),
        "{hist}"
    );
    eprintln!("reload test took {:?}", t0.elapsed());
}

/// `status_allow` keeps cluster addresses and load away from clients outside the list (JSON
/// 403), leaves the API open, and the control listener still answers operators.
#[test]
fn status_allow_hides_the_edge_status_from_other_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let aws = Cluster::start(dir.path(), "aws", "127.0.0.1", 1);
    let clusters = [("aws", aws.base(), 1)];
    // Started open (the helper waits on /edge/status through nginx), then restricted.
    let edge = Edge::start(dir.path(), &clusters, "");
    let client = http();
    let r = edge.reconfigure(&edge.toml(&clusters, r#"status_allow = ["10.0.0.0/8"]"#));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    for path in ["/edge/status", "/edge/metrics", "/", "/ui/app.js"] {
        let (status, _, body) = get_json_error(&client, &format!("{}{path}", edge.base()));
        assert_eq!(
            (status, body.error.code.as_str()),
            (403, "forbidden"),
            "{path}"
        );
    }
    let presets = client
        .get(format!("{}/v1/presets", edge.base()))
        .send()
        .unwrap();
    assert_eq!(presets.status(), 200, "the API is not behind status_allow");
    assert_eq!(
        edge.status().clusters.len(),
        1,
        "control listener still serves it"
    );

    // Allowing loopback opens it again, after a reload.
    let r = edge.reconfigure(&edge.toml(&clusters, r#"status_allow = ["127.0.0.0/8", "::1"]"#));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let r = client
        .get(format!("{}/edge/status", edge.base()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
