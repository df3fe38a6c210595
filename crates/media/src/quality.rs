//! Quality receipts: PSNR and SSIM of an encoded video against its source scaled to the output's
//! size.
//!
//! Two ways to get them, with the same meaning (global PSNR over all frames and planes from the
//! summed squared error; mean *luma* SSIM):
//!
//! * **In the encode** (libx264): `-x264-params psnr=1:ssim=1` makes x264 compare every frame it
//!   encodes with its reconstruction, and log the totals when it closes ([`parse_x264_stats`]).
//!   The encoder's input is the source after reelay's filters and scaling, and its reconstruction
//!   is what a decoder gets back, so this is the receipt without decoding anything twice
//!   (issue 18: the second decode cost a third of a 720p job). Works for every rung of a ladder
//!   and every range of a split job; ranges combine exactly ([`combine`]).
//! * **With ffmpeg's `psnr` and `ssim` filters** ([`measure`]), after the encode, decoding the
//!   source again: the fallback for encoders that do not report both (in Debian's ffmpeg 5.1,
//!   libvpx-vp9 and libaom report PSNR through `-flags +psnr` but no SSIM; libx265 and libsvtav1
//!   report neither through ffmpeg). Debian's ffmpeg has no libvmaf.
//!
//! For the filters, both sides start their timestamps at zero and the source goes through the same picture
//! filters the encode used (deinterlacing, trimming: `reference_filter`) before it is scaled, so
//! each output frame is compared with the source frame it was made from.

use crate::analysis::{self, AnalysisError, Input};
use crate::policy::InputPolicy;
use crate::sandbox::Tools;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What one video output is worth, as reported on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Mean PSNR over all frames and planes (dB); `None` when the output is identical to the
    /// reference (ffmpeg prints `inf`).
    pub psnr_db: Option<f64>,
    /// Mean luma (Y) SSIM over all frames, 0..=1 (the plane x264 reports, so both ways agree).
    pub ssim: f64,
    /// Frames compared.
    pub frames: u64,
}

/// What one libx264 instance measured while encoding (or several, [`combine`]d).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EncoderQuality {
    /// Frames encoded.
    pub frames: u64,
    /// Global PSNR over all frames and planes (dB), from the summed squared error; `None` when
    /// the reconstruction is identical (x264 caps it at 100 dB).
    pub psnr_db: Option<f64>,
    /// Mean luma SSIM over the frames.
    pub ssim: f64,
    /// The video stream's mean bitrate as the encoder counted it, kbit/s.
    pub kbps: Option<f64>,
}

/// The x264 encoder a log line came from (its context's address), and the message after the
/// context (and after the `[info]` marker of `-loglevel level+info`).
fn x264_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.split_once("[libx264 @ ")?.1;
    let (addr, msg) = rest.split_once(']')?;
    let msg = msg.trim_start();
    let msg = msg.strip_prefix("[info]").unwrap_or(msg).trim_start();
    Some((addr, msg))
}

/// The number after `key` in `msg`, up to the next space.
fn field(msg: &str, key: &str) -> Option<f64> {
    msg.split_once(key)?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads the summaries libx264 logs when it closes (`-x264-params psnr=1:ssim=1`, log level
/// `info`): per encoder, the `frame I:/P:/B:` counts, `SSIM Mean Y:` and `PSNR Mean … Global:`.
/// One entry per encoder that printed all three, in the order they closed, which is ffmpeg's
/// order of output streams (it frees the encoders in that order at exit); a reader checks the
/// count against the streams it expects and does not guess when it differs.
pub fn parse_x264_stats<S: AsRef<str>>(lines: &[S]) -> Vec<EncoderQuality> {
    #[derive(Default)]
    struct Acc<'a> {
        addr: &'a str,
        frames: u64,
        ssim: Option<f64>,
        psnr: Option<Option<f64>>,
        kbps: Option<f64>,
    }
    let mut accs: Vec<Acc> = vec![];
    for line in lines {
        let Some((addr, msg)) = x264_line(line.as_ref()) else {
            continue;
        };
        let is_summary = msg.starts_with("frame ")
            || msg.starts_with("SSIM Mean")
            || msg.starts_with("PSNR Mean");
        if !is_summary {
            continue;
        }
        let i = match accs.iter().position(|a| a.addr == addr) {
            Some(i) => i,
            None => {
                accs.push(Acc {
                    addr,
                    ..Default::default()
                });
                accs.len() - 1
            }
        };
        let acc = &mut accs[i];
        if let Some(kind) = msg.strip_prefix("frame ") {
            // `frame I:1     Avg QP:19.65 …`
            let count = kind
                .get(2..)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            acc.frames += count.unwrap_or(0);
        } else if msg.starts_with("SSIM Mean") {
            acc.ssim = field(msg, "Y:");
        } else {
            acc.psnr = field(msg, "Global:").map(|g| Some(g).filter(|g| *g < 100.0));
            acc.kbps = field(msg, "kb/s:");
        }
    }
    accs.into_iter()
        .filter_map(|a| {
            Some(EncoderQuality {
                frames: Some(a.frames).filter(|f| *f > 0)?,
                psnr_db: a.psnr?,
                ssim: a.ssim?,
                kbps: a.kbps,
            })
        })
        .collect()
}

/// Mean squared error relative to 255², from a PSNR in dB (`None`: identical, 0).
fn relative_mse(psnr_db: Option<f64>) -> f64 {
    psnr_db.map_or(0.0, |p| 10f64.powf(-p / 10.0))
}

/// One receipt from the receipts of consecutive parts of one stream (the ranges of a split
/// job): the squared error sums over frames, so global PSNR comes from the frame-weighted mean
/// of each part's MSE, exactly as if one encoder had seen every frame; SSIM and bitrate are
/// frame-weighted means (the parts share a frame rate). `None` for no parts or no frames.
pub fn combine(parts: &[EncoderQuality]) -> Option<EncoderQuality> {
    let frames: u64 = parts.iter().map(|p| p.frames).sum();
    if frames == 0 {
        return None;
    }
    let n = frames as f64;
    let weighted = |f: &dyn Fn(&EncoderQuality) -> f64| {
        parts.iter().map(|p| f(p) * p.frames as f64).sum::<f64>() / n
    };
    let mse = weighted(&|p| relative_mse(p.psnr_db));
    let kbps = parts
        .iter()
        .all(|p| p.kbps.is_some())
        .then(|| weighted(&|p| p.kbps.unwrap_or(0.0)));
    Some(EncoderQuality {
        frames,
        psnr_db: (mse > 0.0).then(|| -10.0 * mse.log10()),
        ssim: weighted(&|p| p.ssim),
        kbps,
    })
}

/// Asks every libx264 encoder of `args` for its PSNR/SSIM summary: `psnr=1:ssim=1` right after
/// each `libx264` (an output option, so it lands in that output's options, before its path),
/// and the log level raised to `info` with level markers (`level+info`), so the summaries are
/// printed and [`crate::run_ffmpeg`] can keep only errors for its error messages. Neither
/// changes the bitstream. Returns whether any libx264 encoder was found (nothing is changed
/// otherwise).
pub fn request_x264_stats(args: &mut Vec<String>) -> bool {
    let at: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| *a == "libx264" && *i > 0 && args[i - 1].starts_with("-c:v"))
        .map(|(i, _)| i)
        .collect();
    if at.is_empty() {
        return false;
    }
    for i in at.into_iter().rev() {
        args.insert(i + 1, "psnr=1:ssim=1".into());
        args.insert(i + 1, "-x264-params".into());
    }
    if let Some(i) = args.iter().position(|a| a == "-loglevel") {
        if let Some(level) = args.get_mut(i + 1) {
            *level = "level+info".into();
        }
    }
    true
}

/// Reads the `psnr` and `ssim` filters' summaries from ffmpeg's stderr.
pub fn parse_quality(stderr: &str) -> Option<(Option<f64>, f64)> {
    let psnr_line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("Parsed_psnr") && l.contains("average:"))?;
    let psnr = psnr_line
        .split("average:")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let psnr = match psnr {
        "inf" => None,
        v => Some(v.parse::<f64>().ok()?),
    };
    let ssim_line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("Parsed_ssim") && l.contains("Y:"))?;
    let ssim = ssim_line
        .split("Y:")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()?;
    Some((psnr, ssim))
}

/// The filter graph comparing output stream `0:v:0` with source stream `1:{source_stream}`.
/// `scale2ref` scales the reference to the output's own size as it decodes, so the output need
/// not be probed first (one process start fewer per output, issue 18).
pub fn filter_graph(source_stream: usize, reference_filter: Option<&str>) -> String {
    let pre = reference_filter
        .filter(|f| !f.is_empty())
        .map(|f| format!("{f},"))
        .unwrap_or_default();
    format!(
        "[0:v:0]setpts=PTS-STARTPTS,setsar=1,format=yuv420p[dist];\
         [1:{source_stream}]{pre}setpts=PTS-STARTPTS[ref];\
         [ref][dist]scale2ref=flags=bicubic[refs][dists];\
         [refs]setsar=1,format=yuv420p,split[r1][r2];[dists]split[d1][d2];\
         [d1][r1]psnr;[d2][r2]ssim"
    )
}

/// Compares `output` (its first video stream) with `source`'s stream `source_stream`, scaled to
/// the output's size.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    tools: &Tools,
    policy: &InputPolicy,
    output: Input<'_>,
    source: Input<'_>,
    source_stream: usize,
    reference_filter: Option<&str>,
    frames: u64,
    timeout: Duration,
) -> Result<QualityReport, AnalysisError> {
    let args = [
        "-filter_complex".to_string(),
        filter_graph(source_stream, reference_filter),
        "-an".to_string(),
        "-sn".to_string(),
        "-dn".to_string(),
    ];
    let stderr = analysis::run(tools, policy, &[output, source], &args, timeout).await?;
    let (psnr_db, ssim) = parse_quality(&stderr).ok_or(AnalysisError::NoResult("quality"))?;
    Ok(QualityReport {
        psnr_db,
        ssim,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ffmpeg 5.1's stderr for two libx264 encoders (`-loglevel level+info`), trimmed.
    const TWO_X264: &str = "\
[libx264 @ 0x5a00] [warning] --psnr used with psy on: results will be invalid!
[libx264 @ 0x5a00] [info] profile High, level 1.2, 4:2:0, 8-bit
[libx264 @ 0x8c00] [info] profile High, level 2.1, 4:2:0, 8-bit
[info] Output #0, mp4, to 'a.mp4':
[libx264 @ 0x5a00] [info] frame I:1     Avg QP:19.65  size:  3057  PSNR Mean Y:44.20 U:44.87 V:43.64 Avg:44.20 Global:44.20
[libx264 @ 0x5a00] [info] frame P:19    Avg QP:24.64  size:  1009  PSNR Mean Y:43.03 U:42.23 V:41.78 Avg:42.65 Global:42.61
[libx264 @ 0x5a00] [info] frame B:30    Avg QP:30.73  size:   465  PSNR Mean Y:42.24 U:41.13 V:40.10 Avg:41.61 Global:41.60
[libx264 @ 0x5a00] [info] mb I  I16..4: 29.6% 48.3% 22.1%
[libx264 @ 0x5a00] [info] SSIM Mean Y:0.9922529 (21.109db)
[libx264 @ 0x5a00] [info] PSNR Mean Y:42.580 U:41.624 V:40.807 Avg:42.058 Global:42.001 kb/s:144.70
[aac @ 0x7000] [info] Qavg: 1030.010
[libx264 @ 0x8c00] [info] frame I:1     Avg QP:21.51  size:  5775  PSNR Mean Y:44.87 U:44.93 V:44.59 Avg:44.83 Global:44.83
[libx264 @ 0x8c00] [info] frame P:14    Avg QP:23.93  size:  2564  PSNR Mean Y:43.75 U:42.85 V:42.70 Avg:43.40 Global:43.34
[libx264 @ 0x8c00] [info] frame B:35    Avg QP:30.00  size:  1213  PSNR Mean Y:42.27 U:41.21 V:40.75 Avg:41.79 Global:41.78
[libx264 @ 0x8c00] [info] SSIM Mean Y:0.9909508 (20.434db)
[libx264 @ 0x8c00] [info] PSNR Mean Y:42.739 U:41.739 V:41.371 Avg:42.302 Global:42.209 kb/s:336.49
";

    #[test]
    fn reads_each_x264_summary_in_close_order() {
        let lines: Vec<&str> = TWO_X264.lines().collect();
        let got = parse_x264_stats(&lines);
        assert_eq!(
            got,
            vec![
                EncoderQuality {
                    frames: 50,
                    psnr_db: Some(42.001),
                    ssim: 0.9922529,
                    kbps: Some(144.70)
                },
                EncoderQuality {
                    frames: 50,
                    psnr_db: Some(42.209),
                    ssim: 0.9909508,
                    kbps: Some(336.49)
                },
            ]
        );
        // Without the level markers (plain `-loglevel info`) it reads the same.
        let plain: Vec<String> = lines.iter().map(|l| l.replace("[info] ", "")).collect();
        assert_eq!(parse_x264_stats(&plain), got);
        // An encoder that did not print all three is left out, not guessed.
        let cut: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !(l.contains("0x8c00") && l.contains("SSIM")))
            .collect();
        assert_eq!(parse_x264_stats(&cut).len(), 1);
        assert!(parse_x264_stats(&["nothing"]).is_empty());
        // x264 caps an identical reconstruction at 100 dB: no finite PSNR.
        let same = [
            "[libx264 @ 0x1] frame I:2 Avg QP:0.00 size: 9",
            "[libx264 @ 0x1] SSIM Mean Y:1.0000000 (inf)",
            "[libx264 @ 0x1] PSNR Mean Y:100.000 U:100.000 V:100.000 Avg:100.000 Global:100.000 kb/s:9.00",
        ];
        assert_eq!(parse_x264_stats(&same)[0].psnr_db, None);
    }

    #[test]
    fn parts_combine_as_one_encode_would() {
        let a = EncoderQuality {
            frames: 30,
            psnr_db: Some(40.0),
            ssim: 0.99,
            kbps: Some(100.0),
        };
        let b = EncoderQuality {
            frames: 10,
            psnr_db: Some(30.0),
            ssim: 0.95,
            kbps: Some(500.0),
        };
        let c = combine(&[a, b]).unwrap();
        // MSE/255²: 1e-4 over 30 frames and 1e-3 over 10 → 3.25e-4.
        assert!((c.psnr_db.unwrap() - (-10.0 * 3.25e-4f64.log10())).abs() < 1e-9);
        assert!((c.ssim - 0.98).abs() < 1e-12);
        assert_eq!(c.frames, 40);
        assert!((c.kbps.unwrap() - 200.0).abs() < 1e-9);
        // One part is the part itself.
        let one = combine(&[a]).unwrap();
        assert!((one.psnr_db.unwrap() - 40.0).abs() < 1e-9);
        // Identical parts have no finite PSNR; an identical part only adds frames.
        let same = EncoderQuality { psnr_db: None, ..a };
        assert_eq!(combine(&[same, same]).unwrap().psnr_db, None);
        let half = combine(&[a, same]).unwrap();
        assert!((half.psnr_db.unwrap() - (40.0 + 10.0 * 2f64.log10())).abs() < 1e-9);
        // A part without bitrate leaves the whole without one.
        assert_eq!(
            combine(&[a, EncoderQuality { kbps: None, ..b }])
                .unwrap()
                .kbps,
            None
        );
        assert_eq!(combine(&[]), None);
    }

    #[test]
    fn asks_every_x264_encoder_and_only_those() {
        let mut a: Vec<String> = "-loglevel error -i x -map 0:0 -c:v libx264 -preset fast -c:a aac out.mp4 -c:v:1 libx264 o2.mkv"
            .split(' ')
            .map(String::from)
            .collect();
        assert!(request_x264_stats(&mut a));
        assert_eq!(
            a.join(" "),
            "-loglevel level+info -i x -map 0:0 -c:v libx264 -x264-params psnr=1:ssim=1 -preset fast -c:a aac out.mp4 -c:v:1 libx264 -x264-params psnr=1:ssim=1 o2.mkv"
        );
        let mut vp9: Vec<String> = "-loglevel error -c:v libvpx-vp9 out.webm"
            .split(' ')
            .map(String::from)
            .collect();
        let before = vp9.clone();
        assert!(!request_x264_stats(&mut vp9));
        assert_eq!(vp9, before);
    }

    #[test]
    fn parses_psnr_and_ssim_summaries() {
        let e = "[Parsed_psnr_6 @ 0x1] PSNR y:38.91 u:44.02 v:44.50 average:40.12 min:36.20 max:45.77\n\
                 [Parsed_ssim_7 @ 0x2] SSIM Y:0.971 (15.4) U:0.985 (18.3) V:0.986 (18.6) All:0.9770 (16.38)\n";
        assert_eq!(parse_quality(e), Some((Some(40.12), 0.971)));
        let same = "[Parsed_psnr_0 @ 1] PSNR y:inf u:inf v:inf average:inf min:inf max:inf\n\
                    [Parsed_ssim_1 @ 2] SSIM Y:1.000000 (inf) All:1.000000 (inf)\n";
        assert_eq!(parse_quality(same), Some((None, 1.0)));
        assert_eq!(parse_quality("nothing measured"), None);
    }

    #[test]
    fn graph_scales_the_reference_after_its_own_filters() {
        let g = filter_graph(2, Some("bwdif=mode=send_frame"));
        assert!(g.contains("[1:2]bwdif=mode=send_frame,setpts=PTS-STARTPTS[ref]"));
        assert!(g.contains("[ref][dist]scale2ref=flags=bicubic"));
        assert!(g.ends_with("[d1][r1]psnr;[d2][r2]ssim"));
        assert!(!filter_graph(0, None).contains("[1:0],"));
    }
}
