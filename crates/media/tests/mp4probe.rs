//! The in-process MP4 probe against real ffprobe: for every generated clip the in-process
//! answer equals the parse of ffprobe's JSON (floats to 1e-9 relative: both sides print `%f`
//! and parse it back, so they are bit-equal in practice), or it is a fallback where one is
//! expected. Then hostile mutations of real files: never a panic, never a wrong answer.

use reelay_media::mp4probe::{keyframes_file, probe_file, probe_reader};
use reelay_media::probe::parse_probe_json;
use reelay_media::MediaInfo;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg must be installed");
    assert!(st.success(), "ffmpeg {args:?}");
}

/// ffprobe as `reelay_media::probe` runs it, parsed the same way. `None` when ffprobe refuses.
fn ffprobe(path: &Path) -> Option<MediaInfo> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-protocol_whitelist", "file"])
        .args([
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-i",
        ])
        .arg(format!("file:{}", path.display()))
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    parse_probe_json(&String::from_utf8_lossy(&out.stdout)).ok()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        (a, b) => a == b,
    }
}

/// Exact equality except floats, which may differ in the last bits only.
fn assert_same(what: &str, ours: &MediaInfo, theirs: &MediaInfo) {
    let msg = || format!("{what}:\n ours   {ours:?}\n ffprobe {theirs:?}");
    assert_eq!(ours.format_name, theirs.format_name, "{}", msg());
    assert!(close(ours.duration, theirs.duration), "{}", msg());
    assert_eq!(ours.bit_rate, theirs.bit_rate, "{}", msg());
    assert_eq!(ours.streams.len(), theirs.streams.len(), "{}", msg());
    for (a, b) in ours.streams.iter().zip(&theirs.streams) {
        assert!(close(a.frame_rate, b.frame_rate), "{}", msg());
        assert!(close(a.duration, b.duration), "{}", msg());
        let strip = |s: &reelay_media::StreamInfo| {
            let mut s = s.clone();
            (s.frame_rate, s.duration) = (None, None);
            s
        };
        assert_eq!(strip(a), strip(b), "{}", msg());
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Must be answered in process, and equal ffprobe's.
    Answer,
    /// Must fall back.
    Fallback,
}

struct Clip {
    name: &'static str,
    args: Vec<String>,
    expect: Expect,
}

fn video(size: &str, rate: &str, secs: &str) -> Vec<String> {
    let src = format!("testsrc2=size={size}:rate={rate}:duration={secs}");
    ["-f", "lavfi", "-i", &src].map(String::from).to_vec()
}

fn tone(rate: u32, secs: &str) -> Vec<String> {
    let src = format!("sine=frequency=440:sample_rate={rate}:duration={secs}");
    ["-f", "lavfi", "-i", &src].map(String::from).to_vec()
}

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn clips() -> Vec<Clip> {
    use Expect::*;
    let x264 = |preset: &str| s(&["-c:v", "libx264", "-preset", preset]);
    let mut v = vec![
        Clip {
            name: "ultrafast_25_mono44.mp4",
            args: [
                video("320x240", "25", "2"),
                tone(44100, "2"),
                x264("ultrafast"),
                s(&["-c:a", "aac", "-shortest"]),
            ]
            .concat(),
            expect: Answer,
        },
        Clip {
            name: "medium_2997_stereo48_faststart_fra.mp4",
            args: [
                video("322x242", "30000/1001", "2.3"),
                tone(48000, "3"),
                x264("medium"),
                s(&[
                    "-c:a",
                    "aac",
                    "-ac",
                    "2",
                    "-metadata:s:a",
                    "language=fra",
                    "-metadata:s:v",
                    "language=eng",
                    "-movflags",
                    "+faststart",
                ]),
            ]
            .concat(),
            expect: Answer,
        },
        Clip {
            name: "medium_30_noaudio_odd.mp4",
            args: [video("250x142", "30", "1.5"), x264("medium")].concat(),
            expect: Answer,
        },
        Clip {
            name: "medium_25_stereo44_bframes.mp4",
            args: [
                video("640x360", "25", "2"),
                tone(44100, "2"),
                x264("medium"),
                s(&["-bf", "3", "-c:a", "aac", "-ac", "2"]),
            ]
            .concat(),
            expect: Answer,
        },
        Clip {
            name: "fullrange.mp4",
            args: [
                video("320x240", "25", "1"),
                x264("ultrafast"),
                s(&["-pix_fmt", "yuvj420p"]),
            ]
            .concat(),
            expect: Answer,
        },
        Clip {
            // A custom quantiser matrix: the SPS carries scaling lists to skip.
            name: "scaling_lists.mp4",
            args: [
                video("320x240", "25", "1"),
                x264("medium"),
                s(&["-x264-params", "cqm=jvt:log-level=error"]),
            ]
            .concat(),
            expect: Answer,
        },
        Clip {
            name: "audio_only.m4a",
            args: [tone(48000, "1.5"), s(&["-c:a", "aac"])].concat(),
            expect: Answer,
        },
        Clip {
            name: "mono22k.mp4",
            args: [
                video("160x120", "25", "1"),
                tone(22050, "1"),
                x264("ultrafast"),
                s(&["-c:a", "aac"]),
            ]
            .concat(),
            expect: Answer,
        },
        Clip {
            name: "ten_bit.mp4",
            args: [
                video("320x240", "25", "1"),
                x264("ultrafast"),
                s(&["-pix_fmt", "yuv420p10le"]),
            ]
            .concat(),
            expect: Fallback,
        },
        Clip {
            name: "yuv422.mp4",
            args: [
                video("320x240", "25", "1"),
                x264("ultrafast"),
                s(&["-pix_fmt", "yuv422p"]),
            ]
            .concat(),
            expect: Fallback,
        },
        Clip {
            name: "interlaced.mp4",
            args: [
                video("320x240", "25", "1"),
                x264("ultrafast"),
                s(&["-flags", "+ildct+ilme", "-x264opts", "tff=1"]),
            ]
            .concat(),
            expect: Fallback,
        },
        Clip {
            name: "fragmented.mp4",
            args: [
                video("320x240", "25", "1"),
                tone(44100, "1"),
                x264("ultrafast"),
                s(&["-c:a", "aac", "-movflags", "frag_keyframe+empty_moov"]),
            ]
            .concat(),
            expect: Fallback,
        },
        Clip {
            name: "hevc.mp4",
            args: [
                video("320x240", "25", "1"),
                s(&[
                    "-c:v",
                    "libx265",
                    "-preset",
                    "ultrafast",
                    "-x265-params",
                    "log-level=error",
                ]),
            ]
            .concat(),
            expect: Fallback,
        },
        Clip {
            name: "vp9.mp4",
            args: [
                video("320x240", "25", "1"),
                s(&["-c:v", "libvpx-vp9", "-deadline", "realtime"]),
            ]
            .concat(),
            expect: Fallback,
        },
        Clip {
            name: "two_audio.mp4",
            args: [
                video("160x120", "25", "1"),
                tone(44100, "1"),
                s(&["-map", "0", "-map", "1", "-map", "1"]),
                x264("ultrafast"),
                s(&["-c:a", "aac"]),
            ]
            .concat(),
            expect: Fallback,
        },
        Clip {
            name: "quicktime.mov",
            args: [
                video("320x240", "25", "1"),
                tone(48000, "1"),
                x264("ultrafast"),
                s(&["-c:a", "aac"]),
            ]
            .concat(),
            expect: Answer,
        },
    ];
    for c in &mut v {
        if c.name.ends_with(".m4a") {
            c.args.extend(s(&["-vn"]));
        }
    }
    v
}

fn generate(dir: &Path, c: &Clip) -> PathBuf {
    let out = dir.join(c.name);
    let mut args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    let o = out.to_str().unwrap();
    args.push(o);
    ffmpeg(&args);
    out
}

#[test]
fn answers_equal_ffprobe_or_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut files: Vec<(String, PathBuf, Expect)> = clips()
        .iter()
        .map(|c| (c.name.to_string(), generate(dir.path(), c), c.expect))
        .collect();
    // Rotation comes from a remux (ffmpeg 5.1 turns the `rotate` tag into the tkhd matrix).
    let base = files[0].1.clone();
    for deg in ["90", "180", "270"] {
        let out = dir.path().join(format!("rotated_{deg}.mp4"));
        let tag = format!("rotate={deg}");
        ffmpeg(&[
            "-i",
            base.to_str().unwrap(),
            "-c",
            "copy",
            "-metadata:s:v:0",
            &tag,
            out.to_str().unwrap(),
        ]);
        files.push((format!("rotated {deg}"), out, Expect::Answer));
    }
    for (name, path, expect) in &files {
        let ours = probe_file(path);
        let theirs = ffprobe(path).unwrap_or_else(|| panic!("{name}: ffprobe refused"));
        match (expect, &ours) {
            (_, Some(ours)) => {
                if *expect == Expect::Fallback {
                    failures.push(format!("{name}: answered in process, expected a fallback"));
                }
                assert_same(name, ours, &theirs);
            }
            (Expect::Answer, None) => failures.push(format!(
                "{name}: fell back, expected an answer ({theirs:?})"
            )),
            (Expect::Fallback, None) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// ffprobe's packet report as the split's keyframe scan reads it: (packet count, (index, pts
/// time) of each keyframe of the first video stream).
fn ffprobe_keyframes(path: &Path) -> (usize, Vec<(usize, f64)>) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-print_format",
            "csv",
        ])
        .args(["-show_entries", "packet=pts_time,flags", "-i"])
        .arg(format!("file:{}", path.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}", path.display());
    let (mut n, mut keys) = (0, vec![]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(',').collect();
        if f.first() != Some(&"packet") {
            continue;
        }
        if f.get(2).is_some_and(|fl| fl.contains('K')) {
            keys.push((n, f[1].parse::<f64>().unwrap()));
        }
        n += 1;
    }
    (n, keys)
}

/// The keyframes read from the sample tables equal ffprobe's packet scan, index for index and
/// time for time, for every clip the probe answers (B-frames, 29.97 fps, faststart, no audio,
/// scene-cut keyframes between the regular ones, a 90 kHz track), and nothing is answered for
/// a file the probe does not answer or one without a keyframe table (intra-only).
#[test]
fn keyframes_from_the_tables_equal_ffprobes_packet_scan() {
    let dir = tempfile::tempdir().unwrap();
    let x264 = |extra: &[&str]| {
        let mut a = s(&["-c:v", "libx264", "-preset", "veryfast"]);
        a.extend(s(extra));
        a
    };
    let mut all = clips();
    all.extend([
        Clip {
            // Scene cuts (testsrc2 moves) plus a short GOP: keyframes at uneven spacing.
            name: "gop12_scenecut_bframes.mp4",
            args: [
                video("320x240", "30", "4"),
                tone(48000, "4"),
                x264(&["-g", "12", "-bf", "2", "-c:a", "aac"]),
            ]
            .concat(),
            expect: Expect::Answer,
        },
        Clip {
            name: "timescale_90k_pyramid.mp4",
            args: [
                video("320x240", "25", "3"),
                x264(&[
                    "-g",
                    "20",
                    "-bf",
                    "3",
                    "-b_strategy",
                    "2",
                    "-video_track_timescale",
                    "90000",
                ]),
            ]
            .concat(),
            expect: Expect::Answer,
        },
        Clip {
            name: "intra_only.mp4",
            args: [video("160x120", "25", "1"), x264(&["-g", "1"])].concat(),
            expect: Expect::Fallback,
        },
    ]);
    let mut answered = 0;
    for c in &all {
        let path = generate(dir.path(), c);
        let ours = keyframes_file(&path);
        if probe_file(&path).is_none() || c.name.ends_with(".m4a") {
            assert_eq!(ours, None, "{}: answered a file the probe does not", c.name);
            continue;
        }
        if c.expect == Expect::Fallback {
            assert_eq!(ours, None, "{}: expected a fallback", c.name);
            continue;
        }
        let ours = ours.unwrap_or_else(|| panic!("{}: fell back", c.name));
        let (packets, keys) = ffprobe_keyframes(&path);
        assert_eq!(ours.packets, packets, "{}", c.name);
        assert_eq!(
            ours.keys.len(),
            keys.len(),
            "{}: {:?} vs {keys:?}",
            c.name,
            ours.keys
        );
        for (a, b) in ours.keys.iter().zip(&keys) {
            assert_eq!(a.0, b.0, "{}: {:?} vs {keys:?}", c.name, ours.keys);
            assert!(
                (a.1 - b.1).abs() < 1e-9,
                "{}: {:?} vs {keys:?}",
                c.name,
                ours.keys
            );
        }
        answered += 1;
    }
    assert!(answered >= 8, "only {answered} clips answered");
}

/// The byte range of the top-level box of that type (header included).
fn top_box(data: &[u8], typ: &[u8; 4]) -> std::ops::Range<usize> {
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let len = if len == 1 {
            u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap()) as usize
        } else {
            len
        };
        if &data[pos + 4..pos + 8] == typ {
            return pos..pos + len;
        }
        pos += len.max(8);
    }
    panic!("no {typ:?}");
}

#[test]
fn truncations_and_byte_flips_never_panic_and_never_lie() {
    let dir = tempfile::tempdir().unwrap();
    let all = clips();
    let mut ffprobe_runs = 0;
    for name in [
        "ultrafast_25_mono44.mp4",
        "medium_2997_stereo48_faststart_fra.mp4",
    ] {
        let clip = all.iter().find(|c| c.name == name).unwrap();
        let path = generate(dir.path(), clip);
        let data = std::fs::read(&path).unwrap();
        let good = probe_file(&path).expect("the base clip is answered in process");
        let moov = top_box(&data, b"moov");
        // Truncation anywhere: the moov at the end is lost, or the mdat is cut: a fallback
        // (an mdat cut short ends past the file) either way.
        for cut in (0..data.len())
            .step_by(97)
            .chain([data.len() - 1, moov.start + 8, moov.end - 1])
        {
            let got = probe_reader(&mut Cursor::new(&data[..cut]), cut as u64);
            assert!(
                got.is_none(),
                "{name}: truncated at {cut} still answered {got:?}"
            );
        }
        // Byte flips: every byte of ftyp and moov, some of mdat. Outside moov the answer cannot
        // change (mdat is never read); inside it an answer must equal ffprobe's on that file.
        let mutant = dir.path().join("mutant.mp4");
        let offsets: Vec<usize> = (0..64)
            .chain(moov.clone())
            .chain((0..data.len()).step_by(1013))
            .collect();
        for at in offsets {
            for flip in [0xffu8, 0x01, 0x80] {
                let mut m = data.clone();
                m[at] ^= flip;
                let got = probe_reader(&mut Cursor::new(&m), m.len() as u64);
                let Some(got) = got else { continue };
                if !moov.contains(&at) && at >= 64 {
                    assert_eq!(
                        got, good,
                        "{name}: flip at {at} outside moov changed the answer"
                    );
                    continue;
                }
                if got == good {
                    continue; // a field the probe does not report (times, sizes, offsets in mdat)
                }
                // A changed answer: ffprobe must agree.
                ffprobe_runs += 1;
                std::fs::write(&mutant, &m).unwrap();
                match ffprobe(&mutant) {
                    Some(theirs) => {
                        assert_same(&format!("{name} flip {flip:#x} at {at}"), &got, &theirs)
                    }
                    None => panic!(
                        "{name}: flip {flip:#x} at {at}: ffprobe refuses, we answered {got:?}"
                    ),
                }
            }
        }
        // Hostile sizes in the first box: zero, one (64-bit) with a huge size, past EOF.
        for size in [0u32, 1, 7, u32::MAX] {
            let mut m = data.clone();
            m[0..4].copy_from_slice(&size.to_be_bytes());
            if size == 1 {
                m.splice(8..8, u64::MAX.to_be_bytes());
            }
            assert!(
                probe_reader(&mut Cursor::new(&m), m.len() as u64).is_none(),
                "{name}: ftyp size {size}"
            );
        }
    }
    // Changed answers were checked against ffprobe; there must have been some, or the flips
    // never touched a reported field.
    assert!(
        ffprobe_runs > 10,
        "only {ffprobe_runs} flips changed the answer"
    );
}

#[test]
fn oversized_moov_and_box_floods_fall_back_without_reading_them() {
    let ftyp = [
        0, 0, 0, 16, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0, 0, 2, 0,
    ];
    // A moov past the cap (32 MiB + 1), all of it present.
    let mut big = ftyp.to_vec();
    let len = (32u32 << 20) + 9;
    big.extend_from_slice(&len.to_be_bytes());
    big.extend_from_slice(b"moov");
    big.resize(big.len() + len as usize - 8, 0);
    assert!(probe_reader(&mut Cursor::new(&big), big.len() as u64).is_none());
    // Thousands of empty top-level boxes, and a moov of nested empty boxes.
    let mut flood = ftyp.to_vec();
    for _ in 0..5000 {
        flood.extend_from_slice(&[0, 0, 0, 8, b'f', b'r', b'e', b'e']);
    }
    assert!(probe_reader(&mut Cursor::new(&flood), flood.len() as u64).is_none());
    let mut nested = ftyp.to_vec();
    let inner: Vec<u8> = (0..100_000)
        .flat_map(|_| [0, 0, 0, 8, b'f', b'r', b'e', b'e'])
        .collect();
    nested.extend_from_slice(&(inner.len() as u32 + 8).to_be_bytes());
    nested.extend_from_slice(b"moov");
    nested.extend_from_slice(&inner);
    assert!(probe_reader(&mut Cursor::new(&nested), nested.len() as u64).is_none());
}
