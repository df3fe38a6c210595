//! Quality receipts: PSNR and SSIM of an encoded video against its source scaled to the output's
//! size, with ffmpeg's own `psnr` and `ssim` filters (Debian's ffmpeg has no libvmaf).
//!
//! Both sides start their timestamps at zero and the source goes through the same picture
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
    /// Mean SSIM over all frames and planes, 0..=1.
    pub ssim: f64,
    /// Frames compared.
    pub frames: u64,
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
        .find(|l| l.contains("Parsed_ssim") && l.contains("All:"))?;
    let ssim = ssim_line
        .split("All:")
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

    #[test]
    fn parses_psnr_and_ssim_summaries() {
        let e = "[Parsed_psnr_6 @ 0x1] PSNR y:38.91 u:44.02 v:44.50 average:40.12 min:36.20 max:45.77\n\
                 [Parsed_ssim_7 @ 0x2] SSIM Y:0.971 (15.4) U:0.985 (18.3) V:0.986 (18.6) All:0.9770 (16.38)\n";
        assert_eq!(parse_quality(e), Some((Some(40.12), 0.977)));
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
