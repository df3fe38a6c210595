//! Job context over real HTTP (issue 15 part 4): the caller's `metadata` stored, returned and
//! filtered on, its limits refused with the rule named and nothing kept; the input's name and
//! probed facts (real ffmpeg clips) in the job view; the outputs a job asked for.

mod common;

use common::*;
use reelay_protocol::{ErrorBody, JobList, JobStatus, JobView};
use std::time::Duration;

async fn post_json(s: &TestServer, body: &serde_json::Value) -> reqwest::Response {
    s.http
        .post(s.url("/v1/jobs"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn error_of(r: reqwest::Response) -> (u16, ErrorBody) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

async fn list(s: &TestServer, query: &str) -> Vec<String> {
    let r = s
        .http
        .get(s.url(&format!("/v1/jobs?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    let l: JobList = r.json().await.unwrap();
    l.jobs.into_iter().map(|j| j.id).collect()
}

async fn submit_with_metadata(
    s: &TestServer,
    clip: &std::path::Path,
    meta: serde_json::Value,
) -> JobView {
    let spec = serde_json::json!({"outputs": [{"preset": "thumbnail"}], "metadata": meta});
    s.submit_ok(clip, &spec.to_string()).await
}

#[tokio::test]
async fn metadata_round_trips_and_filters_the_list() {
    let s = TestServer::start_with(|c| c.allow_private_urls = true).await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let meta = serde_json::json!({"order_id": "A-1", "tenant": "acme", "title": "Fête à Noël"});
    let a = submit_with_metadata(&s, &clip, meta.clone()).await;
    assert_eq!(
        serde_json::to_value(&a.metadata).unwrap(),
        meta,
        "in the 202 answer"
    );
    let b = submit_with_metadata(
        &s,
        &clip,
        serde_json::json!({"order_id": "A-2", "tenant": "acme"}),
    )
    .await;
    let c = submit_with_metadata(
        &s,
        &clip,
        serde_json::json!({"order_id": "A-1", "tenant": "globex"}),
    )
    .await;
    let plain = s
        .submit_ok(&clip, r#"{"outputs":[{"preset":"thumbnail"}]}"#)
        .await;
    // One of acme's jobs fails: its input URL answers nothing.
    let body = serde_json::json!({
        "input": {"url": "http://127.0.0.1:9/gone.mp4"},
        "outputs": [{"preset": "thumbnail"}],
        "metadata": {"order_id": "A-3", "tenant": "acme"},
    });
    let r = post_json(&s, &body).await;
    assert_eq!(r.status(), 202);
    let d: JobView = r.json().await.unwrap();
    for j in [&b, &c, &plain] {
        s.wait(&j.id, Duration::from_secs(60)).await;
    }
    assert_eq!(
        s.wait(&d.id, Duration::from_secs(60)).await.status,
        JobStatus::Failed
    );
    assert!(plain.metadata.is_empty());
    let a_done = s.wait(&a.id, Duration::from_secs(60)).await;
    assert_eq!(a_done.status, JobStatus::Succeeded, "{a_done:?}");
    assert_eq!(
        serde_json::to_value(&a_done.metadata).unwrap(),
        meta,
        "in the job view"
    );
    // The raw JSON carries it as an object, and a job without any as {}.
    let raw: serde_json::Value = s.get_json(&format!("/v1/jobs/{}", plain.id)).await;
    assert_eq!(raw["metadata"], serde_json::json!({}));

    assert_eq!(
        list(&s, "metadata.tenant=acme").await,
        [d.id.as_str(), b.id.as_str(), a.id.as_str()]
    );
    assert_eq!(
        list(&s, "metadata.order_id=A-1").await,
        [c.id.as_str(), a.id.as_str()]
    );
    assert_eq!(
        list(&s, "metadata.order_id=A-1&metadata.tenant=acme").await,
        [a.id.as_str()],
        "every filter must hold"
    );
    // Values are matched exactly, percent-decoded like any query value.
    assert_eq!(
        list(&s, "metadata.title=F%C3%AAte%20%C3%A0%20No%C3%ABl").await,
        [a.id.as_str()]
    );
    assert!(list(&s, "metadata.title=F%C3%AAte").await.is_empty());
    assert!(list(&s, "metadata.tenant=ACME").await.is_empty());
    // Combined with status and paging.
    assert_eq!(
        list(&s, "status=succeeded&metadata.tenant=acme").await,
        [b.id.as_str(), a.id.as_str()]
    );
    assert_eq!(
        list(&s, "status=failed&metadata.tenant=acme").await,
        [d.id.as_str()]
    );
    // OpenAPI's deepObject spelling is the same filter.
    assert_eq!(
        list(&s, "metadata%5Btenant%5D=acme&metadata[order_id]=A-1").await,
        [a.id.as_str()]
    );
    assert!(list(&s, "status=failed&metadata.tenant=globex")
        .await
        .is_empty());
    assert_eq!(
        list(&s, "metadata.tenant=acme&limit=1").await,
        [d.id.as_str()]
    );
    // A key no submission may use is not an error (OpenAPI cannot say which keys are valid):
    // it matches nothing.
    for impossible in [
        "metadata.=x",
        "metadata.a%20b=x",
        "metadata.a/b=x",
        "metadata[a%20b]=x",
    ] {
        assert!(
            list(&s, impossible).await.is_empty(),
            "{impossible} matched a job"
        );
    }
    // What the OpenAPI parameter does constrain is refused as it says.
    let many: Vec<String> = (0..17).map(|i| format!("metadata.k{i}=v")).collect();
    let long = format!("metadata.k={}", "x".repeat(513));
    for bad in [many.join("&"), long] {
        let r = s
            .http
            .get(s.url(&format!("/v1/jobs?{bad}")))
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(r).await;
        assert_eq!(
            (status, body.error.code.as_str()),
            (400, "invalid_query"),
            "{}",
            &bad[..40]
        );
    }
    // The same metadata is part of the idempotent spec: a replay returns the job, other
    // metadata under the same key is a conflict.
    let spec = serde_json::json!({"outputs": [{"preset": "thumbnail"}], "metadata": {"k": "v"}});
    let submit = |spec: serde_json::Value| {
        let form = reqwest::multipart::Form::new()
            .text("spec", spec.to_string())
            .part(
                "file",
                reqwest::multipart::Part::bytes(std::fs::read(&clip).unwrap()).file_name("c.mp4"),
            );
        s.http
            .post(s.url("/v1/jobs"))
            .header("idempotency-key", "ctx-1")
            .multipart(form)
            .send()
    };
    assert_eq!(submit(spec.clone()).await.unwrap().status(), 202);
    assert_eq!(submit(spec).await.unwrap().status(), 200);
    let other = serde_json::json!({"outputs": [{"preset": "thumbnail"}], "metadata": {"k": "w"}});
    assert_eq!(submit(other).await.unwrap().status(), 409);
}

#[tokio::test]
async fn metadata_beyond_its_limits_is_refused_naming_the_rule_and_keeps_nothing() {
    let s = TestServer::start().await;
    let many: serde_json::Map<String, serde_json::Value> =
        (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
    let big: serde_json::Map<String, serde_json::Value> = (0..9)
        .map(|i| (format!("k{i}"), "x".repeat(500).into()))
        .collect();
    let cases = [
        (serde_json::Value::Object(many), "at most 16 keys"),
        (serde_json::json!({"has space": "v"}), "A-Z a-z 0-9 _ . -"),
        (serde_json::json!({"k".repeat(65): "v"}), "1-64 bytes"),
        (
            serde_json::json!({"n": 5}),
            "metadata.n: the value must be a string",
        ),
        (
            serde_json::json!({"v": "x".repeat(513)}),
            "longer than 512 bytes",
        ),
        (
            serde_json::json!({"v": "a\u{1b}[2Jb"}),
            "control characters",
        ),
        (serde_json::Value::Object(big), "more than 4096"),
        (serde_json::json!(["k", "v"]), "must be an object"),
    ];
    for (meta, rule) in &cases {
        let body = serde_json::json!({
            "input": {"url": "https://example.com/a.mp4"},
            "outputs": [{"preset": "thumbnail"}],
            "metadata": meta,
        });
        let (status, err) = error_of(post_json(&s, &body).await).await;
        assert_eq!(status, 422, "{meta}");
        assert_eq!(err.error.code, "invalid_metadata", "{meta}");
        assert!(
            err.error.message.contains(rule),
            "{meta}: {:?} lacks {rule:?}",
            err.error.message
        );
    }
    // The multipart path refuses it before the file is read, and keeps no scratch file.
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, false);
    let spec = serde_json::json!({"outputs": [{"preset": "thumbnail"}], "metadata": {"n": 1}});
    let (status, err) = error_of(s.submit_file(&clip, &spec.to_string()).await).await;
    assert_eq!((status, err.error.code.as_str()), (422, "invalid_metadata"));
    assert!(list(&s, "").await.is_empty(), "no job was created");
    let scratch = std::fs::read_dir(s.state.cfg.data_dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(scratch, 0);
    // At the limits exactly, it is accepted.
    let full: serde_json::Map<String, serde_json::Value> =
        (0..16).map(|i| (format!("{i:0>64}"), "é".into())).collect();
    let j = submit_with_metadata(&s, &clip, serde_json::Value::Object(full)).await;
    assert_eq!(j.metadata.len(), 16);
}

/// A clip whose stored picture is 160x120 but which displays turned (a phone's portrait clip).
fn portrait_clip(dir: &std::path::Path) -> std::path::PathBuf {
    let flat = clip(dir, "flat.mp4", 160, 120, 1.0, true);
    let out = dir.join("portrait.mp4");
    ffmpeg(&[
        "-i",
        flat.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        out.to_str().unwrap(),
    ]);
    out
}

#[tokio::test]
async fn the_job_view_says_what_the_input_is_and_what_was_asked_for() {
    let s = TestServer::start_with(|c| c.allow_private_urls = true).await;
    let portrait = portrait_clip(s.dir.path());
    let size = std::fs::metadata(&portrait).unwrap().len();
    let facts = ffprobe_bytes(&std::fs::read(&portrait).unwrap(), "mp4");

    // Multipart: probed at admission, so the facts are in the 202 answer already. The name is
    // the uploaded file's, without its directories or control characters.
    let form = reqwest::multipart::Form::new()
        .text(
            "spec",
            r#"{"outputs":[{"preset":"thumbnail"},{"name":"small","container":"mp4","video":{"codec":"h264","height":96},"audio":{"codec":"aac"}}]}"#,
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(&portrait).unwrap())
                // A tab is the one control character a header value may carry.
                .file_name("../../home/me/Holiday\t 2024.mp4"),
        );
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let raw: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{raw}");
    let text = raw.to_string();
    let data_dir = s.state.cfg.data_dir.to_string_lossy().to_string();
    assert!(
        !text.contains(&data_dir) && !text.contains("inputs/"),
        "no server path: {text}"
    );
    let input = &raw["input"];
    assert_eq!(input["name"], "Holiday 2024.mp4");
    assert_eq!(input["size"], size);
    // Displayed size: turned a quarter, as ffprobe's rotation says.
    assert_eq!(
        (input["width"].as_u64(), input["height"].as_u64()),
        (Some(120), Some(160))
    );
    assert_eq!(input["video_codec"], "h264");
    assert_eq!(input["audio_codec"], "aac");
    let d = input["duration_seconds"].as_f64().unwrap();
    assert!(
        (d - facts.duration()).abs() < 0.05,
        "{d} vs ffprobe {}",
        facts.duration()
    );
    assert_eq!(
        raw["requested_outputs"],
        serde_json::json!([
            {"name": "thumbnail.jpg", "preset": "thumbnail"},
            {"name": "small.mp4", "preset": null}
        ])
    );
    let id = raw["id"].as_str().unwrap().to_string();
    let done = s.wait(&id, Duration::from_secs(90)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    // The requested names are the names the outputs got.
    let mut made: Vec<&str> = done.outputs.iter().map(|o| o.name.as_str()).collect();
    let mut asked: Vec<&str> = done
        .requested_outputs
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    made.sort();
    asked.sort();
    assert_eq!(made, asked);

    // URL input: named from the URL's last segment, probed by the worker once it downloads.
    let bytes = std::fs::read(&portrait).unwrap();
    let app = axum::Router::new().route(
        "/media/{name}",
        axum::routing::get(move || async move { bytes.clone() }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let body = serde_json::json!({
        "input": {"url": format!("{origin}/media/My%20Clip.mp4?token=secret")},
        "outputs": [{"preset": "thumbnail"}],
    });
    let r = post_json(&s, &body).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    let queued: JobView = serde_json::from_str(&text).unwrap();
    let input = queued.input.clone().expect("input");
    assert_eq!(input.name.as_deref(), Some("My Clip.mp4"));
    assert_eq!(
        (
            input.size,
            input.duration_seconds,
            input.width,
            input.video_codec
        ),
        (None, None, None, None),
        "not probed yet"
    );
    let done = s.wait(&queued.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let input = done.input.expect("input");
    assert_eq!(input.size, Some(size));
    assert_eq!((input.width, input.height), (Some(120), Some(160)));
    assert_eq!(input.video_codec.as_deref(), Some("h264"));
    assert_eq!(input.audio_codec.as_deref(), Some("aac"));
    assert!((input.duration_seconds.unwrap() - facts.duration()).abs() < 0.05);
    // The list carries the same context.
    let l: JobList = s.get_json("/v1/jobs").await;
    let listed = l.jobs.iter().find(|j| j.id == queued.id).unwrap();
    assert_eq!(
        listed.input.as_ref().unwrap().name.as_deref(),
        Some("My Clip.mp4")
    );
    assert_eq!(listed.requested_outputs[0].name, "thumbnail.jpg");
}

/// An output path that goes through a file (`manifest.mpd/…`), names a directory, or has a
/// segment too long for the file system is a missing output (404 JSON), not a storage error.
#[tokio::test]
async fn output_paths_no_file_can_have_are_404() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let j = s
        .succeeded(
            &clip,
            r#"{"outputs":[{"preset":"cmaf"},{"preset":"thumbnail"}]}"#,
        )
        .await;
    let base = format!("/v1/jobs/{}/outputs", j.id);
    let (status, _) = s.get_bytes(&format!("{base}/cmaf/manifest.mpd")).await;
    assert_eq!(status, 200, "the manifest itself is there");
    for path in [
        "cmaf/manifest.mpd/outputs/x".to_string(),
        "thumbnail.jpg/x".to_string(),
        "cmaf".to_string(),
        // One segment longer than a file name may be (ENAMETOOLONG).
        "a".repeat(256),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let r = s
                .http
                .request(method.clone(), s.url(&format!("{base}/{path}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{method} {path}");
            if method == reqwest::Method::GET {
                let (_, body) = error_of(r).await;
                assert_eq!(body.error.code, "not_found", "{path}");
            }
        }
    }
}
