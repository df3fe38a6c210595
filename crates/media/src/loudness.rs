//! Loudness (ITU-R BS.1770 / EBU R128) measured with ffmpeg's `loudnorm` and corrected in two
//! passes: measure the input, then normalise with the measured values, linearly where the true
//! peak allows it.
//!
//! Two passes because one-pass `loudnorm` works on a sliding window and pumps the level of
//! dynamic material; with the whole file measured first it can apply one gain (linear mode) for
//! most inputs and falls back to dynamic compression only when one gain would push peaks past the
//! ceiling.

use crate::analysis::{self, AnalysisError, Input};
use crate::policy::InputPolicy;
use crate::sandbox::Tools;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a job asks of its audio's loudness (`"audio": {"loudness": ...}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoudnessMode {
    /// Measure and report, change nothing.
    Measure,
    /// Normalise to this target.
    Normalize(LoudnessTarget),
}

/// A normalisation target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoudnessTarget {
    /// Integrated loudness, LUFS.
    pub integrated: f64,
    /// True-peak ceiling, dBTP.
    pub true_peak: f64,
}

/// EBU R128 broadcast: −23 LUFS, −1 dBTP.
pub const EBU_R128: LoudnessTarget = LoudnessTarget {
    integrated: -23.0,
    true_peak: -1.0,
};
/// What the large streaming platforms normalise to: −14 LUFS, −1 dBTP.
pub const STREAMING: LoudnessTarget = LoudnessTarget {
    integrated: -14.0,
    true_peak: -1.0,
};

/// Integrated loudness targets `loudnorm` accepts.
const MIN_LUFS: f64 = -70.0;
const MAX_LUFS: f64 = -5.0;

/// Reads the spec's value: `"ebu-r128"`, `"streaming"`, `"measure"` or a number of LUFS
/// (−70..=−5). The error is a message for the 422 answer.
pub fn parse_mode(value: &serde_json::Value) -> Result<LoudnessMode, String> {
    match value {
        serde_json::Value::String(s) => match s.as_str() {
            "ebu-r128" => Ok(LoudnessMode::Normalize(EBU_R128)),
            "streaming" => Ok(LoudnessMode::Normalize(STREAMING)),
            "measure" => Ok(LoudnessMode::Measure),
            other => Err(format!(
                "unknown loudness {other:?}: use \"ebu-r128\", \"streaming\", \"measure\" or a number of LUFS"
            )),
        },
        serde_json::Value::Number(n) => {
            let lufs = n.as_f64().unwrap_or(f64::NAN);
            if (MIN_LUFS..=MAX_LUFS).contains(&lufs) {
                Ok(LoudnessMode::Normalize(LoudnessTarget {
                    integrated: lufs,
                    true_peak: -1.0,
                }))
            } else {
                Err(format!(
                    "loudness {lufs} LUFS is outside {MIN_LUFS}..={MAX_LUFS}"
                ))
            }
        }
        _ => Err("loudness must be a string or a number of LUFS".into()),
    }
}

/// What `loudnorm` measured of a signal. Values are `None` for silence (ffmpeg prints `-inf`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LoudnessStats {
    /// Integrated loudness, LUFS.
    pub integrated_lufs: Option<f64>,
    /// True peak, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// Loudness range, LU.
    pub range_lu: Option<f64>,
    /// Gating threshold, LUFS (needed by the second pass, not shown to users).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub threshold_lufs: Option<f64>,
}

/// Reads the JSON block `loudnorm=print_format=json` prints on stderr: the `input_*` values
/// describe the signal that entered the filter.
pub fn parse_loudnorm_json(stderr: &str) -> Option<LoudnessStats> {
    let start = stderr.rfind("Parsed_loudnorm")?;
    let rest = &stderr[start..];
    let open = rest.find('{')?;
    let close = rest[open..].find('}')? + open;
    let map: std::collections::HashMap<String, String> =
        serde_json::from_str(&rest[open..=close]).ok()?;
    let value = |k: &str| -> Option<f64> {
        map.get(k)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    // A missing key means this is not the block we think it is.
    map.get("input_i")?;
    Some(LoudnessStats {
        integrated_lufs: value("input_i"),
        true_peak_dbtp: value("input_tp"),
        range_lu: value("input_lra"),
        threshold_lufs: value("input_thresh"),
    })
}

/// The second-pass filter for `target`, given the first pass's `measured` values, or `None`
/// when there is nothing to normalise (silence: no integrated loudness).
///
/// The loudness-range target is the measured range (at least `loudnorm`'s default 7 LU): a
/// target narrower than the programme would force dynamic mode. `linear=true` makes `loudnorm`
/// apply one gain whenever the true peak allows; it resamples to 192 kHz internally, so the chain
/// ends with an `aformat` that resamples back to `sample_rate` (an explicit `aresample` there fails on mono input once linear mode reinitialises the graph).
pub fn normalize_filter(
    target: LoudnessTarget,
    measured: &LoudnessStats,
    sample_rate: u32,
) -> Option<String> {
    normalize_filter_for(target, measured, sample_rate, None)
}

/// [`normalize_filter`] with the channel layout pinned too (`channels` of the input: mono,
/// stereo, 5.1, 7.1). When `loudnorm` reinitialises the graph mid-stream (a switch between
/// linear and dynamic mode), an `aformat` that fixes only the rate leaves the layout to be
/// negotiated again with the encoder, which fails in ffmpeg 5.1 ("Cannot select channel layout").
pub fn normalize_filter_for(
    target: LoudnessTarget,
    measured: &LoudnessStats,
    sample_rate: u32,
    channels: Option<u32>,
) -> Option<String> {
    let layout = match channels {
        Some(1) => ":channel_layouts=mono",
        Some(2) => ":channel_layouts=stereo",
        Some(6) => ":channel_layouts=5.1",
        Some(8) => ":channel_layouts=7.1",
        _ => "",
    };
    let i = measured.integrated_lufs?;
    let tp = measured.true_peak_dbtp.unwrap_or(target.true_peak);
    let lra = measured.range_lu.unwrap_or(7.0);
    let thresh = measured.threshold_lufs.unwrap_or(i - 10.0);
    let target_lra = lra.clamp(7.0, 50.0);
    Some(format!(
        "loudnorm=I={:.1}:TP={:.1}:LRA={:.1}:measured_I={:.2}:measured_TP={:.2}:measured_LRA={:.2}:measured_thresh={:.2}:linear=true,aformat=sample_rates={}{layout}",
        target.integrated, target.true_peak, target_lra, i, tp, lra, thresh, sample_rate.max(8000)
    ))
}

/// Measures the loudness of audio stream `stream` of `input` (first pass).
pub async fn measure(
    tools: &Tools,
    policy: &InputPolicy,
    input: Input<'_>,
    stream: usize,
    timeout: Duration,
) -> Result<LoudnessStats, AnalysisError> {
    let args = [
        "-map".to_string(),
        format!("0:{stream}"),
        "-af".to_string(),
        "loudnorm=print_format=json".to_string(),
        "-vn".to_string(),
        "-sn".to_string(),
        "-dn".to_string(),
    ];
    let stderr = analysis::run(tools, policy, &[input], &args, timeout).await?;
    parse_loudnorm_json(&stderr).ok_or(AnalysisError::NoResult("loudness"))
}

/// Loudness before and after, as reported on an output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoudnessReport {
    /// The target, `None` for measure-only.
    pub target_lufs: Option<f64>,
    pub input: LoudnessStats,
    pub output: Option<LoudnessStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDERR: &str = r#"Output #0, null, to 'pipe:':
[Parsed_loudnorm_0 @ 0x55d0c0c0] 
{
	"input_i" : "-27.61",
	"input_tp" : "-4.47",
	"input_lra" : "18.06",
	"input_thresh" : "-39.20",
	"output_i" : "-16.58",
	"output_tp" : "-1.50",
	"output_lra" : "14.78",
	"output_thresh" : "-27.71",
	"normalization_type" : "dynamic",
	"target_offset" : "0.58"
}
[out#0/null @ 0x1] video:0KiB audio:1kB"#;

    #[test]
    fn parses_the_first_pass_block() {
        let s = parse_loudnorm_json(STDERR).unwrap();
        assert_eq!(s.integrated_lufs, Some(-27.61));
        assert_eq!(s.true_peak_dbtp, Some(-4.47));
        assert_eq!(s.range_lu, Some(18.06));
        assert_eq!(s.threshold_lufs, Some(-39.2));
    }

    #[test]
    fn silence_reads_as_none_and_garbage_as_no_block() {
        let silent = STDERR
            .replace("\"-27.61\"", "\"-inf\"")
            .replace("\"-4.47\"", "\"-inf\"");
        let s = parse_loudnorm_json(&silent).unwrap();
        assert_eq!((s.integrated_lufs, s.true_peak_dbtp), (None, None));
        assert!(normalize_filter(EBU_R128, &s, 48000).is_none());
        assert!(parse_loudnorm_json("no filter output here").is_none());
        assert!(parse_loudnorm_json("[Parsed_loudnorm_0 @ 1] { not json }").is_none());
    }

    #[test]
    fn second_pass_uses_measured_values_and_resamples_back() {
        let s = parse_loudnorm_json(STDERR).unwrap();
        let f = normalize_filter(STREAMING, &s, 44100).unwrap();
        assert!(f.starts_with("loudnorm=I=-14.0:TP=-1.0:LRA=18.1:measured_I=-27.61:"));
        assert!(f.contains("measured_thresh=-39.20:linear=true"));
        assert!(f.ends_with(",aformat=sample_rates=44100"));
        // A narrow programme still gets loudnorm's default range as its target.
        let narrow = LoudnessStats {
            range_lu: Some(2.0),
            ..s
        };
        assert!(normalize_filter(EBU_R128, &narrow, 48000)
            .unwrap()
            .contains(":LRA=7.0:"));
    }

    #[test]
    fn spec_values() {
        use serde_json::json;
        assert_eq!(
            parse_mode(&json!("ebu-r128")),
            Ok(LoudnessMode::Normalize(EBU_R128))
        );
        assert_eq!(
            parse_mode(&json!("streaming")),
            Ok(LoudnessMode::Normalize(STREAMING))
        );
        assert_eq!(parse_mode(&json!("measure")), Ok(LoudnessMode::Measure));
        assert_eq!(
            parse_mode(&json!(-16)),
            Ok(LoudnessMode::Normalize(LoudnessTarget {
                integrated: -16.0,
                true_peak: -1.0
            }))
        );
        assert!(parse_mode(&json!(-3)).is_err());
        assert!(parse_mode(&json!(-80.5)).is_err());
        assert!(parse_mode(&json!("loud"))
            .unwrap_err()
            .contains("unknown loudness"));
        assert!(parse_mode(&json!(true)).is_err());
    }
}
