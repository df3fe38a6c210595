//! Watermarks through the API, checked as a user would: a job over real HTTP (real ffmpeg,
//! SQLite, local storage) with a PNG part, every video output and every rung of its ladder
//! decoded back and looked at where the mark must be and where it must not; hostile images and
//! inconsistent specs refused with a 4xx and no job.

mod common;

use common::*;
use reelay_media::watermark::{Position, WatermarkSpec};
use reelay_protocol::{JobList, JobStatus, JobView};
use std::path::Path;

/// Multipart: spec, the watermark part (when given), then the input file.
async fn submit(
    s: &TestServer,
    spec: &str,
    mark: Option<Vec<u8>>,
    file: &Path,
) -> reqwest::Response {
    let parts = mark.map(|m| ("watermark", m, "logo.png")).into_iter();
    s.submit_parts(spec, parts.collect(), file).await
}

/// A white `w`x`h` image in `ext` (png or jpg), as bytes.
fn white_image(dir: &Path, w: u32, h: u32, ext: &str) -> Vec<u8> {
    let out = dir.join(format!("mark-{w}x{h}.{ext}"));
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("color=white:size={w}x{h}"),
        "-frames:v",
        "1",
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

/// The first frame of a downloaded media file as 8-bit luma, with its size.
fn first_frame_luma(bytes: &[u8], ext: &str) -> (u32, u32, Vec<u8>) {
    let p = ffprobe_bytes(bytes, ext);
    let (w, h) = p.dims().unwrap();
    let luma = frame_luma(bytes, ext, None);
    assert_eq!(luma.len() as u64, w * h);
    (w as u32, h as u32, luma)
}

/// One `w`x`h` tile at the top-left corner of a decoded picture.
fn crop((pw, _, px): &(u32, u32, Vec<u8>), w: u32, h: u32) -> (u32, u32, Vec<u8>) {
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        let row = (y * pw) as usize;
        out.extend_from_slice(&px[row..row + w as usize]);
    }
    (w, h, out)
}

/// The mark is bright inside the box the placement names and absent everywhere else (the
/// source is black), on a picture of any rung's size.
fn assert_marked(spec: &WatermarkSpec, (w, h, px): &(u32, u32, Vec<u8>), what: &str) {
    let p = spec.placement((*w, *h), (80, 40));
    let mut inside = (0u64, 0u64);
    let mut outside_max = 0u8;
    for y in 0..*h {
        for x in 0..*w {
            let v = px[(y * w + x) as usize];
            // One pixel of slack at the edges for chroma subsampling and encoder ringing.
            let in_box = x > p.x && x + 1 < p.x + p.width && y > p.y && y + 1 < p.y + p.height;
            let near =
                x + 2 >= p.x && x <= p.x + p.width + 2 && y + 2 >= p.y && y <= p.y + p.height + 2;
            if in_box {
                inside = (inside.0 + v as u64, inside.1 + 1);
            } else if !near {
                outside_max = outside_max.max(v);
            }
        }
    }
    let mean = inside.0 as f64 / inside.1.max(1) as f64;
    assert!(
        mean > 200.0,
        "{what} {w}x{h}: mark missing at {p:?} (mean luma {mean})"
    );
    assert!(
        outside_max < 60,
        "{what} {w}x{h}: bright pixel {outside_max} outside {p:?}"
    );
}

#[tokio::test]
async fn a_watermark_sits_at_the_same_place_on_every_output_and_rung() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = black_clip(dir.path(), "black.mp4", 1280, 720, 2.0, true);
    let spec = WatermarkSpec {
        position: Position::TopLeft,
        margin: 0.05,
        scale: 0.2,
        opacity: 1.0,
    };
    let json = format!(
        r#"{{"outputs":[{{"preset":"mp4-360p"}},{{"preset":"hls-abr"}},{{"preset":"dash"}},{{"preset":"thumbnail"}},{{"preset":"storyboard"}}],
            "watermark":{}}}"#,
        serde_json::to_string(&spec).unwrap()
    );
    let r = submit(
        &s,
        &json,
        Some(white_image(dir.path(), 80, 40, "png")),
        &input,
    )
    .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let j: JobView = r.json().await.unwrap();
    let j = s.wait(&j.id, std::time::Duration::from_secs(300)).await;
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    let get = |name: String| {
        let s = &s;
        let id = j.id.clone();
        async move {
            let (status, bytes) = s.get_bytes(&format!("/v1/jobs/{id}/outputs/{name}")).await;
            assert_eq!(status, 200, "{name}");
            bytes
        }
    };

    let mp4 = first_frame_luma(&get("mp4-360p.mp4".into()).await, "mp4");
    assert_eq!((mp4.0, mp4.1), (640, 360));
    assert_marked(&spec, &mp4, "mp4-360p");
    let thumb = first_frame_luma(&get("thumbnail.jpg".into()).await, "jpg");
    assert_marked(&spec, &thumb, "thumbnail");

    // The storyboard: the first tile of the first sheet (160x90 from 1280x720) carries the
    // mark scaled to the tile, at the same relative place.
    let sheet = first_frame_luma(&get("storyboard/sprite_001.jpg".into()).await, "jpg");
    assert_eq!((sheet.0, sheet.1), (800, 450), "5x5 tiles of 160x90");
    assert_marked(&spec, &crop(&sheet, 160, 90), "storyboard tile");

    // Every rung the master playlist names: its first segment, decoded.
    let master = String::from_utf8(get("hls-abr/master.m3u8".into()).await).unwrap();
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(variants.len(), 3, "720/480/360 rungs: {master}");
    let mut sizes = vec![];
    for v in variants {
        let playlist = String::from_utf8(get(format!("hls-abr/{v}")).await).unwrap();
        let seg = playlist
            .lines()
            .find(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        let base = v.rsplit_once('/').map_or("", |(b, _)| b);
        let frame = first_frame_luma(&get(format!("hls-abr/{base}/{seg}")).await, "ts");
        assert_marked(&spec, &frame, v);
        sizes.push((frame.0, frame.1));
    }
    sizes.sort();
    assert_eq!(sizes, [(640, 360), (854, 480), (1280, 720)]);

    // DASH (one adaptation set, the rungs' display aspect set alike): every video
    // representation's init segment plus its first media segment, decoded.
    let mpd = String::from_utf8(get("dash/manifest.mpd".into()).await).unwrap();
    let reps = reelay_media::manifest::mpd_representations(&mpd).unwrap();
    let mut sizes = vec![];
    for rep in reps.iter().filter(|r| r.mime_type == "video/mp4") {
        let mut bytes = get(format!("dash/{}", rep.init)).await;
        bytes.extend(get(format!("dash/{}", rep.media[0])).await);
        let frame = first_frame_luma(&bytes, "mp4");
        assert_marked(&spec, &frame, &format!("dash {}", rep.id));
        sizes.push((frame.0, frame.1));
    }
    sizes.sort();
    assert_eq!(sizes, [(640, 360), (854, 480), (1280, 720)]);
}

/// What is sent (a label, the spec, the watermark part) and the answer expected (status, code).
type Case<'a> = (&'a str, &'a str, Option<Vec<u8>>, u16, &'a str);

#[tokio::test]
async fn hostile_watermarks_and_inconsistent_specs_are_refused_without_a_job() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 320, 180, 1.0, false);
    let with = r#"{"outputs":[{"preset":"mp4-360p"}],"watermark":{"position":"bottom-right"}}"#;
    let png = white_image(dir.path(), 80, 40, "png");
    let mut too_big = png.clone();
    too_big.resize(3 << 20, 0);
    let cases: Vec<Case> = vec![
        (
            "text",
            with,
            Some(b"not an image at all".to_vec()),
            422,
            "watermark_unsupported",
        ),
        (
            "a video",
            with,
            Some(std::fs::read(&input).unwrap()),
            422,
            "watermark_unsupported",
        ),
        (
            "a playlist",
            with,
            Some(format!("#EXTM3U\n{}\n", input.display()).into_bytes()),
            422,
            "watermark_unsupported",
        ),
        (
            "a GIF",
            with,
            Some(white_image(dir.path(), 8, 8, "gif")),
            422,
            "watermark_unsupported",
        ),
        (
            "over 2 MiB",
            with,
            Some(too_big),
            413,
            "watermark_too_large",
        ),
        (
            "huge dimensions",
            with,
            Some(white_image(dir.path(), 4200, 8, "png")),
            422,
            "watermark_too_large",
        ),
        ("no image part", with, None, 422, "invalid_spec"),
        (
            "an image but no watermark field",
            r#"{"outputs":[{"preset":"mp4-360p"}]}"#,
            Some(png.clone()),
            422,
            "invalid_spec",
        ),
        (
            "opacity out of range",
            r#"{"outputs":[{"preset":"mp4-360p"}],"watermark":{"opacity":3}}"#,
            Some(png.clone()),
            422,
            "invalid_spec",
        ),
        (
            "stream copy",
            r#"{"outputs":[{"name":"c","container":"mkv","video":{"codec":"copy"}}],"watermark":{}}"#,
            Some(png.clone()),
            422,
            "invalid_spec",
        ),
    ];
    for (what, spec, mark, status, code) in cases {
        let r = submit(&s, spec, mark, &input).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    // JPEG is accepted (the control: the refusals above are about the image, not the job).
    let ok = submit(
        &s,
        with,
        Some(white_image(dir.path(), 80, 40, "jpg")),
        &input,
    )
    .await;
    assert_eq!(ok.status(), 202);
    let list: JobList = s.get_json("/v1/jobs").await;
    assert_eq!(
        list.jobs.len(),
        1,
        "only the JPEG job exists: {:?}",
        list.jobs
    );
}
