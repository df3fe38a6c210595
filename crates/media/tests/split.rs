//! Split-and-stitch with real ffmpeg on generated clips: split → encode pieces → encode audio
//! once → stitch, compared with the unsplit encode of the same input and output (the existing
//! `argv::build` path), as a user would: ffprobe on every file and every HLS segment.

use reelay_media::plan::{Container, Ladder, Packaging, Rendition, Rung, Segments};
use reelay_media::split::playlist::{parse_segments, Segment};
use reelay_media::split::{self, SplitPlan, SplitRequest, SplitSettings};
use reelay_media::*;
use reelay_protocol::OutputSpec;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FPS: f64 = 25.0;
const FRAME: f64 = 1.0 / FPS;
/// Range length: two 4 s HLS segments per range; 24 s inputs.
const RANGE_SECONDS: u32 = 8;
/// The bound: the rungs are capped CRF encodes and every range but the first is
/// preceded by a dropped pre-roll (`split::plan::PREROLL_SECONDS`), so a range's rate control
/// starts as the unsplit encode's does there. (With ABR rungs and no pre-roll the split rung
/// was 0.08 dB (MPEG-2) and 0.43 dB (H.264) lower at these 8 s ranges.)
const HLS_PSNR_TOLERANCE: f64 = 0.1;

fn limits() -> RunLimits {
    RunLimits {
        stall_timeout: Duration::from_secs(60),
        time_limit: Duration::from_secs(300),
        max_out_time: None,
    }
}

fn gen(out: &Path, codec_args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        // Light noise, as in real footage, kept under the presets' bitrate caps: a capped
        // encode starts every piece with a full VBV buffer, which would grow the split output
        // (+14 % measured at 4 s pieces with heavy noise), and that is not what this compares.
        .arg("testsrc2=size=320x180:rate=25:duration=24,noise=alls=4:allf=t")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=24"])
        .args(codec_args)
        .args(["-shortest"])
        .arg(out)
        .status()
        .expect("ffmpeg must be installed");
    assert!(st.success(), "generating {out:?}");
}

/// H.264 with B-frames, keyframes every 1.92 s (never on a 4 s boundary).
fn h264_input(dir: &Path) -> PathBuf {
    let p = dir.join("h264.mp4");
    gen(
        &p,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-g",
            "48",
            "-c:a",
            "aac",
        ],
    );
    p
}

/// MPEG-2 with open GOPs (B-frames before each I-frame in display order that reference the
/// previous GOP), in MPEG-TS, whose timestamps start at 1.4 s as broadcast files do.
fn mpeg2_open_gop_input(dir: &Path) -> PathBuf {
    let p = dir.join("mpeg2.ts");
    gen(
        &p,
        &[
            "-c:v",
            "mpeg2video",
            "-flags",
            "-cgop",
            "-g",
            "15",
            "-bf",
            "2",
            "-q:v",
            "3",
            "-c:a",
            "mp2",
        ],
    );
    p
}

fn ffprobe_json(args: &[&str], path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
        .unwrap_or(f64::NAN)
}

/// (start, end) of the first stream of a kind, from its packets.
fn span(path: &Path, sel: &str) -> (f64, f64) {
    let j = ffprobe_json(
        &[
            "-select_streams",
            sel,
            "-show_entries",
            "packet=pts_time,duration_time",
        ],
        path,
    );
    let pk = j["packets"].as_array().unwrap();
    let start = pk
        .iter()
        .map(|p| f(&p["pts_time"]))
        .fold(f64::INFINITY, f64::min);
    let end = pk
        .iter()
        .map(|p| f(&p["pts_time"]) + f(&p["duration_time"]).max(0.0))
        .fold(f64::NEG_INFINITY, f64::max);
    (start, end)
}

/// Decode timestamps of the video packets of `files` read in order (a joint inside a file or
/// between segments shows up as a DTS that does not increase).
fn video_dts(files: &[PathBuf]) -> Vec<f64> {
    files
        .iter()
        .flat_map(|p| {
            let j = ffprobe_json(
                &["-select_streams", "v:0", "-show_entries", "packet=dts_time"],
                p,
            );
            j["packets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| f(&p["dts_time"]))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_strictly_increasing(dts: &[f64], what: &str) {
    for w in dts.windows(2) {
        assert!(w[1] > w[0], "{what}: DTS {} then {}", w[0], w[1]);
    }
}

/// PSNR (average, dB) of `out`'s video against the source, frame by frame from the start.
fn psnr(out: &Path, source: &Path) -> f64 {
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(out)
        .arg("-i")
        .arg(source)
        .args([
            "-lavfi",
            "[0:v]setpts=PTS-STARTPTS[a];[1:v]setpts=PTS-STARTPTS[b];[a][b]psnr",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("PSNR") && l.contains("average:"))
        .unwrap_or_else(|| panic!("no PSNR for {out:?}: {err}"));
    line.split("average:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// A two-rung ladder for a 180-line input (the hls-abr rungs are all above it).
fn small_ladder() -> Rendition {
    let mut r = resolve_outputs(&[OutputSpec::preset("hls-abr")])
        .unwrap()
        .remove(0);
    r.name = "ladder".into();
    r.packaging = Packaging::Hls {
        ladder: Ladder {
            rungs: vec![
                Rung {
                    short_side: 180,
                    video_kbps: 600,
                    audio_kbps: 96,
                },
                Rung {
                    short_side: 120,
                    video_kbps: 300,
                    audio_kbps: 64,
                },
            ],
            segment_seconds: 4,
        },
        segments: Segments::Ts,
    };
    r
}

async fn run(inv_args: &[String], cwd: &Path) {
    run_ffmpeg(
        &Tools::default(),
        inv_args,
        cwd,
        limits(),
        &CancellationToken::new(),
        |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The segment files of a media playlist, in order.
fn playlist_files(pl: &Path) -> (String, Vec<Segment>, Vec<PathBuf>) {
    let text = std::fs::read_to_string(pl).unwrap();
    let segs = parse_segments(&text);
    let files = segs
        .iter()
        .map(|s| pl.parent().unwrap().join(&s.uri))
        .collect();
    (text, segs, files)
}

fn concat(files: &[PathBuf], dest: &Path) {
    let mut out = std::fs::File::create(dest).unwrap();
    for f in files {
        std::io::copy(&mut std::fs::File::open(f).unwrap(), &mut out).unwrap();
    }
}

fn packets(path: &Path, sel: &str) -> usize {
    let j = ffprobe_json(
        &["-select_streams", sel, "-show_entries", "packet=pts_time"],
        path,
    );
    j["packets"].as_array().unwrap().len()
}

/// `request` decides the ranges, `ranges` says how many it must make: `"auto"` starts an HLS
/// job with the ramp (4 s, then the 8 s length: ranges of unequal length), a fixed length cuts
/// them all equal.
async fn split_and_stitch_matches_unsplit(
    input: PathBuf,
    label: &str,
    request: SplitRequest,
    ranges: usize,
) {
    let t0 = std::time::Instant::now();
    let tools = Tools::default();
    let policy = InputPolicy::default();
    let root = input.parent().unwrap().to_path_buf();
    let info = probe(&input, &tools, &policy).await.unwrap();
    let mp4 = resolve_outputs(&[OutputSpec::preset("mp4-360p")])
        .unwrap()
        .remove(0);
    let ladder = small_ladder();
    // HEVC in Matroska: the other container the stitch writes, and the other piece codec.
    let hevc = resolve_outputs(&[OutputSpec {
        name: Some("hevc".into()),
        container: Some("mkv".into()),
        video: Some(reelay_protocol::VideoSpec {
            codec: "h265".into(),
            ..Default::default()
        }),
        ..Default::default()
    }])
    .unwrap()
    .remove(0);
    let files = [mp4.clone(), hevc.clone()];
    let renditions = vec![mp4.clone(), ladder.clone(), hevc.clone()];

    let settings = SplitSettings {
        segment_seconds: RANGE_SECONDS,
        max_segments: 500,
        ..SplitSettings::default()
    };
    let layout = match split::plan(
        &info,
        &renditions,
        settings,
        request,
        &split::plan::SideFiles::default(),
    ) {
        SplitPlan::Split(l) => l,
        other => panic!("{label}: not split: {other:?}"),
    };
    assert_eq!(layout.ranges.len(), ranges, "{label}: {layout:?}");

    // split
    let pieces_dir = root.join("pieces");
    let manifest = split::split(
        &tools,
        &policy,
        &info,
        &input,
        &layout.ranges,
        &pieces_dir,
        limits(),
        &CancellationToken::new(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(manifest.pieces.len(), ranges, "{label}: {manifest:?}");
    for (p, r) in manifest.pieces.iter().zip(&layout.ranges) {
        // The keyframe at or before the range start (the first piece: the first picture,
        // which may come a little after the input's start).
        // Every range but the first is cut before its pre-roll.
        let from = r.start - split::plan::preroll(r.index, r.start);
        let ok = p.start <= from + 1e-6 || (r.index == 0 && p.start < FRAME);
        assert!(ok && p.start > from - 2.0, "{label}: {p:?} for {r:?}");
        assert_eq!(p.keyframes.first(), Some(&p.start));
        // The manifest records the piece's size (thieves' transfers are priced from it).
        let on_disk = std::fs::metadata(pieces_dir.join(&p.file)).unwrap().len();
        assert_eq!(p.bytes, Some(on_disk), "{label}: {p:?}");
        // Stream copy: the piece holds exactly its keyframes.
        let kf = ffprobe_json(
            &[
                "-select_streams",
                "v:0",
                "-skip_frame",
                "nokey",
                "-show_entries",
                "packet=flags",
            ],
            &pieces_dir.join(&p.file),
        );
        let keys = kf["packets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["flags"].as_str().unwrap_or("").contains('K'))
            .count();
        assert_eq!(keys, p.keyframes.len(), "{label}: {}", p.file);
    }
    let t_split = t0.elapsed();

    // encode_segment for every range (each into its own directory, as separate workers would),
    // then gathered into one work directory as the stitch's worker downloads them.
    let work = root.join("work");
    let mut outputs = vec![];
    for task in split::segment_tasks(&layout, &manifest) {
        let o = split::encode_segment(
            &tools,
            &policy,
            &info,
            &renditions,
            &task,
            &pieces_dir,
            &work,
            limits(),
            &CancellationToken::new(),
            true,
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: range {}: {e}", task.index));
        // Quality measured in the range's own encode: the H.264 file and every rung, none for
        // the HEVC file (libx265 does not report), each rung over the same frames.
        let names: Vec<&str> = o.file_quality.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![mp4.name.as_str()],
            "{label}: range {}",
            task.index
        );
        assert!(!o.hls.is_empty());
        for h in &o.hls {
            let q = h
                .quality
                .unwrap_or_else(|| panic!("{label}: rung {} unmeasured", h.rung));
            assert_eq!(
                q.frames, o.file_quality[0].1.frames,
                "{label}: rung {}",
                h.rung
            );
            assert!(q.psnr_db.unwrap() > 25.0 && q.ssim > 0.8, "{label}: {q:?}");
        }
        outputs.push(o);
    }
    let audio_tasks = split::audio_tasks(&renditions, &info);
    let kbps: Vec<u32> = audio_tasks.iter().map(|t| t.kbps).collect();
    assert_eq!(
        kbps,
        vec![128, 96, 64],
        "{label}: one audio encode per distinct plan"
    );
    let mut audio = vec![];
    for t in &audio_tasks {
        audio.push(
            split::encode_audio(
                &tools,
                &policy,
                &info,
                &input,
                t,
                &work,
                limits(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .unwrap(),
        );
    }
    let t_encode = t0.elapsed();

    // Progressive HLS: the first two ranges give an EVENT playlist a player can start on.
    let out = root.join("out");
    let event =
        split::stitch_hls(&ladder, &info, &outputs[..2], ranges, &audio, &work, &out).unwrap();
    assert_eq!((event.ranges, event.complete), (2, false));
    for rung in ["v0", "v1", "a96", "a64"] {
        let (text, segs, files) = playlist_files(&out.join("ladder").join(rung).join("index.m3u8"));
        assert!(
            text.contains("#EXT-X-PLAYLIST-TYPE:EVENT"),
            "{label} {rung}: {text}"
        );
        assert!(!text.contains("ENDLIST") && !text.contains("DISCONTINUITY"));
        assert!(segs.len() >= 2, "{label} {rung}: {text}");
        for f in &files {
            assert!(packets(f, "0") > 0, "{f:?}");
        }
    }
    // Out of order: range 2 done before range 1 adds nothing to the playlists.
    let gap = [outputs[0].clone(), outputs[2].clone()];
    let still = split::stitch_hls(&ladder, &info, &gap, ranges, &audio, &work, &out).unwrap();
    assert_eq!((still.ranges, still.complete), (1, false));

    let hls = split::stitch_hls(&ladder, &info, &outputs, ranges, &audio, &work, &out).unwrap();
    assert!(hls.complete);
    let track128 = audio.iter().find(|a| a.kbps == 128);
    let mut stitched = vec![];
    for r in &files {
        stitched.push(
            split::stitch_file(
                &tools,
                r,
                &outputs,
                track128,
                &work,
                &out,
                limits(),
                &CancellationToken::new(),
                |_| {},
            )
            .await
            .unwrap(),
        );
    }
    let t_all = t0.elapsed();

    // The unsplit reference, through the existing single-task path.
    let reference = root.join("ref");
    std::fs::create_dir_all(&reference).unwrap();
    for r in [&mp4, &ladder, &hevc] {
        let inv = build(r, &info, &policy, &input, &reference).unwrap();
        run(&inv.args, &reference).await;
    }

    // ---- the files ----
    for (r, file) in files.iter().zip(&stitched) {
        let label = &format!("{label} {}", r.name);
        let (s_mp4, u_mp4) = (out.join(file), reference.join(r.primary_file()));
        let (sf, uf) = (packets(&s_mp4, "v:0"), packets(&u_mp4, "v:0"));
        assert_eq!(sf, uf, "{label}: frame count");
        let (sv, uv) = (span(&s_mp4, "v:0"), span(&u_mp4, "v:0"));
        assert!(
            ((sv.1 - sv.0) - (uv.1 - uv.0)).abs() <= FRAME + 1e-6,
            "{label}: video {sv:?} vs {uv:?}"
        );
        let sa = span(&s_mp4, "a:0");
        assert!(
            (sa.0 - sv.0).abs() <= FRAME,
            "{label}: audio starts {sa:?}, video {sv:?}"
        );
        assert!(
            (sa.1 - sv.1).abs() <= FRAME,
            "{label}: audio ends {sa:?}, video {sv:?}"
        );
        let dts = video_dts(std::slice::from_ref(&s_mp4));
        if dts.iter().any(|d| d.is_nan()) {
            // Matroska stores no decode timestamps (ffprobe guesses a few): check the
            // presentation times instead, no picture twice and no hole at a joint.
            let j = ffprobe_json(
                &["-select_streams", "v:0", "-show_entries", "packet=pts_time"],
                &s_mp4,
            );
            let mut pts: Vec<f64> = j["packets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| f(&p["pts_time"]))
                .collect();
            pts.sort_by(f64::total_cmp);
            assert_strictly_increasing(&pts, label);
            let gap = pts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
            assert!(
                gap < 1.5 * FRAME,
                "{label}: a {gap} s hole between pictures"
            );
        } else {
            assert_strictly_increasing(&dts, label);
        }
        let codec = ffprobe_json(
            &["-show_entries", "stream=codec_name,codec_tag_string"],
            &s_mp4,
        );
        let ucodec = ffprobe_json(
            &["-show_entries", "stream=codec_name,codec_tag_string"],
            &u_mp4,
        );
        assert_eq!(
            codec["streams"], ucodec["streams"],
            "{label}: codecs and tags"
        );
        if r.container() == Some(Container::Mp4) {
            // faststart: the index comes before the media.
            let head = std::fs::read(&s_mp4).unwrap();
            let pos = |tag: &[u8]| head.windows(4).position(|w| w == tag).unwrap();
            assert!(pos(b"moov") < pos(b"mdat"), "{label}: not faststart");
        }
        let (sp, up) = (psnr(&s_mp4, &input), psnr(&u_mp4, &input));
        assert!(
            sp >= up - 0.1,
            "{label}: PSNR split {sp:.3} dB, unsplit {up:.3} dB"
        );
        let (ss, us) = (size(&s_mp4), size(&u_mp4));
        let ratio = ss as f64 / us as f64;
        assert!((0.95..=1.05).contains(&ratio), "{label}: size {ss} vs {us}");
        println!(
        "{label}: frames {sf}/{uf}, video {:.3}/{:.3} s, audio {:.3}..{:.3}, PSNR {sp:.3}/{up:.3} dB, size {ss}/{us} ({:+.1} %)",
        sv.1 - sv.0, uv.1 - uv.0, sa.0, sa.1, (ratio - 1.0) * 100.0
    );
    }

    // ---- HLS ----
    let master = std::fs::read_to_string(out.join("ladder/master.m3u8")).unwrap();
    let ref_master = std::fs::read_to_string(reference.join("ladder/master.m3u8")).unwrap();
    for want in [
        "RESOLUTION=320x180",
        "RESOLUTION=214x120",
        "TYPE=AUDIO",
        "mp4a.40.2",
    ] {
        assert!(master.contains(want), "{label}: {want} in {master}");
    }
    let codec = |m: &str| {
        m.split("CODECS=\"")
            .nth(1)
            .and_then(|c| c.split(',').next())
            .map(String::from)
    };
    assert_eq!(
        codec(&master),
        codec(&ref_master),
        "{label}: {master}\n{ref_master}"
    );
    for k in 0..2 {
        let (text, segs, files) = playlist_files(&out.join(format!("ladder/v{k}/index.m3u8")));
        let (_, rsegs, rfiles) = playlist_files(&reference.join(format!("ladder/v{k}/index.m3u8")));
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!text.contains("DISCONTINUITY"));
        let target = segs
            .iter()
            .map(|s| s.duration.round() as u32)
            .max()
            .unwrap();
        assert!(
            text.contains(&format!("#EXT-X-TARGETDURATION:{target}\n")),
            "{label}: {text}"
        );
        // Aligned with the unsplit ladder: same segments, same lengths.
        assert_eq!(
            segs.len(),
            rsegs.len(),
            "{label} v{k}: {segs:?} vs {rsegs:?}"
        );
        for (a, b) in segs.iter().zip(&rsegs) {
            assert!(
                (a.duration - b.duration).abs() <= FRAME + 1e-3,
                "{label} v{k}: {a:?} vs {b:?}"
            );
        }
        let dts = video_dts(&files);
        assert_strictly_increasing(&dts, &format!("{label} v{k}"));
        let rframes = video_dts(&rfiles).len();
        assert_eq!(dts.len(), rframes, "{label} v{k}: frame count");
        // Every segment starts with a keyframe at the same time as unsplit.
        let (whole, rwhole) = (root.join(format!("v{k}.ts")), root.join(format!("r{k}.ts")));
        concat(&files, &whole);
        concat(&rfiles, &rwhole);
        // PSNR against the source on the full-size rung.
        let (ap, up) = if k == 0 {
            (psnr(&whole, &input), psnr(&rwhole, &input))
        } else {
            (f64::NAN, f64::NAN)
        };
        if k == 0 {
            assert!(
                ap >= up - HLS_PSNR_TOLERANCE,
                "{label} v{k}: PSNR split {ap:.3}, unsplit {up:.3}"
            );
        }
        // Audio group, played with the rung: starts with the video, ends within a frame.
        let group = if k == 0 { "a96" } else { "a64" };
        let (atext, _, afiles) = playlist_files(&out.join(format!("ladder/{group}/index.m3u8")));
        assert!(atext.ends_with("#EXT-X-ENDLIST\n"));
        let (vs, ve) = (
            span(&files[0], "v:0").0,
            span(files.last().unwrap(), "v:0").1,
        );
        let (as_, ae) = (
            span(&afiles[0], "a:0").0,
            span(afiles.last().unwrap(), "a:0").1,
        );
        assert!(
            (as_ - vs).abs() <= FRAME,
            "{label} {group}: audio {as_}..{ae} video {vs}..{ve}"
        );
        assert!(
            (ae - ve).abs() <= FRAME,
            "{label} {group}: audio {as_}..{ae} video {vs}..{ve}"
        );
        let abytes: u64 = afiles.iter().map(|f| size(f)).sum();
        let vbytes: u64 = files.iter().map(|f| size(f)).sum::<u64>() + abytes;
        println!(
            "{label} v{k}: split video {} + audio {abytes} bytes",
            vbytes - abytes
        );
        let rbytes: u64 = rfiles.iter().map(|f| size(f)).sum();
        let ratio = vbytes as f64 / rbytes as f64;
        assert!(
            (0.95..=1.05).contains(&ratio),
            "{label} v{k}: {vbytes} vs {rbytes} bytes"
        );
        println!(
            "{label} hls v{k}: {} segments, frames {}/{rframes}, PSNR {ap:.3}/{up:.3} dB, bytes (video + audio group {abytes}) {vbytes}/{rbytes} muxed ({:+.1} %)",
            segs.len(), dts.len(), (ratio - 1.0) * 100.0
        );
    }
    println!(
        "{label}: split {:.1} s, encodes {:.1} s, stitched {:.1} s, total with reference {:.1} s",
        t_split.as_secs_f64(),
        t_encode.as_secs_f64(),
        t_all.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn h264_with_b_frames_split_and_stitched_matches_unsplit() {
    let dir = tempfile::tempdir().unwrap();
    // Auto: the HLS start ramp makes 4, 8, 8 and 4 s ranges of the 24 s input.
    split_and_stitch_matches_unsplit(h264_input(dir.path()), "h264", SplitRequest::default(), 4)
        .await;
}

#[tokio::test]
async fn mpeg2_open_gop_split_and_stitched_matches_unsplit() {
    let dir = tempfile::tempdir().unwrap();
    let every_8s = SplitRequest::Seconds {
        segment_seconds: RANGE_SECONDS,
    };
    split_and_stitch_matches_unsplit(mpeg2_open_gop_input(dir.path()), "mpeg2", every_8s, 3).await;
}
