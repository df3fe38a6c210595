//! Loudness on preset outputs (`{"preset": "mp4-720p", "loudness": "streaming"}`), checked as a
//! user would: a job over real HTTP (real ffmpeg, SQLite, local storage), the output downloaded
//! and measured again with ffmpeg's own `ebur128` meter; the same preset without the field is
//! the control (left as loud as it came); refusals are 422 naming the field; the field is part
//! of the idempotent spec.

mod common;

use common::*;
use reelay_protocol::{JobView, LoudnessAction};
use std::path::Path;

async fn lufs_of(s: &TestServer, j: &JobView, name: &str, dir: &Path) -> f64 {
    let o = j
        .outputs
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name} in {j:?}"));
    let (status, bytes) = s.get_bytes(&o.url).await;
    assert_eq!(status, 200, "{}", o.url);
    let path = dir.join(name.replace('/', "_"));
    std::fs::write(&path, bytes).unwrap();
    integrated_lufs(&path)
}

#[tokio::test]
async fn a_preset_output_normalised_to_streaming_comes_out_at_minus_14_lufs() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip_with_audio(
        dir.path(),
        "quiet.mp4",
        "320x240",
        4,
        "sine=frequency=440:duration=4,volume=-20dB",
    );
    let before = integrated_lufs(&input);
    assert!(before < -30.0, "the input is quiet: {before}");
    let j = s
        .succeeded(
            &input,
            r#"{"outputs":[{"preset":"mp4-720p","loudness":"streaming"},
                           {"preset":"mp4-360p"}]}"#,
        )
        .await;
    let got = lufs_of(&s, &j, "mp4-720p.mp4", dir.path()).await;
    eprintln!("input {before:.2} LUFS, mp4-720p with streaming loudness {got:.2} LUFS");
    assert!(
        (got + 14.0).abs() <= 1.0,
        "mp4-720p from {before:.1} LUFS came out at {got:.1}, target -14"
    );
    let o = j.outputs.iter().find(|o| o.name == "mp4-720p.mp4").unwrap();
    let r = o.loudness.expect("loudness receipt");
    assert_eq!(r.mode, LoudnessAction::Normalize);
    assert_eq!(r.target_lufs, Some(-14.0));
    // The control: the same kind of preset without the field keeps the input's loudness.
    let untouched = lufs_of(&s, &j, "mp4-360p.mp4", dir.path()).await;
    assert!(
        (untouched - before).abs() <= 1.0,
        "a preset without loudness changed {before:.1} to {untouched:.1}"
    );
    let o = j.outputs.iter().find(|o| o.name == "mp4-360p.mp4").unwrap();
    assert!(o.loudness.is_none());
}

#[tokio::test]
async fn preset_loudness_refusals_name_the_field_and_it_is_part_of_the_idempotent_spec() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 64, 64, 1.0, true);
    for spec in [
        r#"{"outputs":[{"preset":"thumbnail","loudness":"streaming"}]}"#,
        r#"{"outputs":[{"preset":"storyboard","loudness":"measure"}]}"#,
        r#"{"outputs":[{"preset":"mp4-360p","loudness":"loud"}]}"#,
        r#"{"outputs":[{"preset":"mp4-360p","loudness":-2}]}"#,
        r#"{"outputs":[{"preset":"mp4-360p","loudness":[1]}]}"#,
        r#"{"outputs":[{"name":"a","container":"mp4","loudness":"streaming"}]}"#,
    ] {
        let r = s.submit_file(&input, spec).await;
        assert_eq!(r.status(), 422, "{spec}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_spec", "{spec}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("outputs[0].loudness"), "{spec}: {body}");
    }
    // The same Idempotency-Key with another loudness is another request: 409.
    let send = |spec: &'static str| {
        let form = reqwest::multipart::Form::new().text("spec", spec).part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(&input).unwrap()).file_name("c.mp4"),
        );
        s.http
            .post(s.url("/v1/jobs"))
            .header("Idempotency-Key", "loud-1")
            .multipart(form)
            .send()
    };
    let a = send(r#"{"outputs":[{"preset":"audio-aac","loudness":"ebu-r128"}]}"#)
        .await
        .unwrap();
    assert_eq!(a.status(), 202);
    let a: JobView = a.json().await.unwrap();
    let replay = send(r#"{"outputs":[{"preset":"audio-aac","loudness":"ebu-r128"}]}"#)
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<JobView>().await.unwrap().id, a.id);
    let other = send(r#"{"outputs":[{"preset":"audio-aac","loudness":"streaming"}]}"#)
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
    s.wait(&a.id, std::time::Duration::from_secs(60)).await;
}
