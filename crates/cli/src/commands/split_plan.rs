//! `reelay split-plan`: how a cluster would split an input, without a cluster. It probes the
//! file here (ffprobe, as a worker does) and prints the plan `"split": "auto"` makes for the
//! given outputs on a cluster of the given slots: the ranges its `encode_segment` tasks would
//! encode. For sizing `split.segment_seconds` before a big film arrives, and for
//! bench/split.sh, whose projections schedule the ranges the plan makes at 8, 32, 128 slots.

use super::{emit, emit_json, UsageError};
use clap::Args;
use reelay_media::split::{self, SideFiles, SplitPlan, SplitRequest, SplitSettings};
use reelay_protocol::OutputSpec;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct SplitPlanArgs {
    /// The input file (probed here with ffprobe).
    pub input: PathBuf,
    /// An output preset; repeat for several [default: hls-abr].
    #[arg(long = "preset", value_name = "NAME")]
    pub presets: Vec<String>,
    /// The cluster's live worker slots; the range length is fitted to them. Without it the
    /// configured length stands (what a cluster does when it cannot read its slots).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: Option<u32>,
    /// The cluster's `split.segment_seconds` (2..3600, as the cluster's config allows).
    #[arg(long, default_value_t = SplitSettings::default().segment_seconds,
          value_parser = clap::value_parser!(u32).range(2..=3600))]
    pub segment_seconds: u32,
    /// The cluster's `split.max_segments` (2..10000, as the cluster's config allows).
    #[arg(long, default_value_t = SplitSettings::default().max_segments,
          value_parser = clap::value_parser!(u32).range(2..=10000))]
    pub max_segments: u32,
    /// Print the plan as JSON (`{"plan": "split", "segment_seconds", "ranges": [...]}` or
    /// `{"plan": "single", "reason"}`).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &SplitPlanArgs) -> anyhow::Result<()> {
    let names = if args.presets.is_empty() {
        vec!["hls-abr".to_string()]
    } else {
        args.presets.clone()
    };
    let outputs: Vec<OutputSpec> = names.iter().map(|n| OutputSpec::preset(n)).collect();
    let renditions =
        reelay_media::resolve_outputs(&outputs).map_err(|e| UsageError(e.to_string()))?;
    // ffprobe would call a missing file "not a readable media file".
    if !args.input.is_file() {
        return Err(UsageError(format!("{}: no such file", args.input.display())).into());
    }
    let tools = reelay_media::Tools::default();
    let info =
        reelay_media::probe::probe(&args.input, &tools, &reelay_media::InputPolicy::default())
            .await
            .map_err(|e| anyhow::anyhow!("cannot probe {}: {e}", args.input.display()))?;
    let settings = SplitSettings {
        segment_seconds: args.segment_seconds,
        max_segments: args.max_segments,
        live_slots: args.slots,
        ..SplitSettings::default()
    };
    let plan = split::plan(
        &info,
        &renditions,
        settings,
        SplitRequest::default(),
        &SideFiles::default(),
    );
    if args.json {
        return emit_json(&plan);
    }
    emit(render(&plan, args.slots))?;
    Ok(())
}

/// The plan in a line or two: the ranges' lengths in order (runs of equal ones counted), and
/// the list-scheduling makespan the length was chosen by.
pub fn render(plan: &SplitPlan, slots: Option<u32>) -> String {
    let layout = match plan {
        SplitPlan::Single(why) => {
            // The reason's code, then its numbers (`too_short (duration 62, needed 64)`).
            let v = serde_json::to_value(why).unwrap_or_default();
            let reason = v["reason"].as_str().unwrap_or("?").to_string();
            let facts: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != "reason")
                .map(|(k, v)| format!("{k} {}", v.as_str().map_or(v.to_string(), String::from)))
                .collect();
            return if facts.is_empty() {
                format!("not split: {reason}")
            } else {
                format!("not split: {reason} ({})", facts.join(", "))
            };
        }
        SplitPlan::Split(layout) => layout,
    };
    let mut runs: Vec<(f64, usize)> = vec![];
    for r in &layout.ranges {
        let len = ((r.end - r.start) * 100.0).round() / 100.0;
        match runs.last_mut() {
            Some((l, n)) if *l == len => *n += 1,
            _ => runs.push((len, 1)),
        }
    }
    let lengths: Vec<String> = runs
        .iter()
        .map(|(l, n)| {
            if *n > 1 {
                format!("{n} × {l} s")
            } else {
                format!("{l} s")
            }
        })
        .collect();
    let mut out = format!(
        "split: {} ranges of up to {} s: {}",
        layout.ranges.len(),
        layout.segment_seconds,
        lengths.join(", ")
    );
    if let Some(n) = slots.filter(|n| *n > 0) {
        out.push_str(&format!(
            "\non {n} slot{}: {:.1} media seconds of encode per slot at most (list schedule, pre-roll included)",
            if n == 1 { "" } else { "s" },
            split::plan::list_makespan(&layout.ranges, n)
        ));
    }
    if !layout.whole.is_empty() {
        let whole: Vec<&str> = layout.whole.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&format!("\nwhole: {}", whole.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelay_media::split::{NoSplit, Range, SplitLayout};

    #[test]
    fn renders_runs_of_equal_ranges_and_the_reason_not_to_split() {
        let r = |index: usize, start: f64, end: f64| Range { index, start, end };
        let plan = SplitPlan::Split(SplitLayout {
            segment_seconds: 8,
            ranges: vec![
                r(0, 0.0, 4.0),
                r(1, 4.0, 12.0),
                r(2, 12.0, 20.0),
                r(3, 20.0, 25.0),
            ],
            split: vec!["hls-abr".into()],
            whole: vec![],
        });
        assert_eq!(
            render(&plan, Some(2)),
            "split: 4 ranges of up to 8 s: 4 s, 2 × 8 s, 5 s\n\
             on 2 slots: 14.0 media seconds of encode per slot at most (list schedule, pre-roll included)"
        );
        assert_eq!(
            render(&SplitPlan::Single(NoSplit::Off), None),
            "not split: off"
        );
        let short = NoSplit::TooShort {
            duration: 62.0,
            needed: 64.0,
        };
        assert_eq!(
            render(&SplitPlan::Single(short), None),
            "not split: too_short (duration 62.0, needed 64.0)"
        );
        assert!(render(&plan, Some(1)).contains("\non 1 slot: "));
    }
}
