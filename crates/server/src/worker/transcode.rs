//! The `transcode` task: a whole job in one go, from input to stored outputs.
//!
//! Fetch (or read) the input, probe it, encode every rendition with ffmpeg, store the files
//! under this attempt's own prefix. Every way it can fail is a [`TranscodeError`] that knows its
//! code and whether another attempt could succeed.

use super::receipts::{self, Meter};
use super::timing::Phase;
use super::{Context, StopReason, TaskError};
use crate::fetch::FetchError;
use crate::metrics as m;
use crate::storage::{content_type, StorageError};
use reelay_jobs::StoredOutput;
use reelay_media::{ProbeError, Rejection, RunError, RunLimits};
use reelay_protocol::JobSpec;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Why a transcode attempt did not produce its outputs.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The worker's own disk: another attempt (maybe elsewhere) may do better.
    #[error("{0}")]
    Scratch(String),
    /// The stored spec or input no longer reads: admission accepted something this build
    /// cannot run.
    #[error("{0}")]
    InvalidSpec(String),
    #[error("{0}")]
    InputNotFound(String),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Fetch(FetchError),
    /// The input policy refused what was fetched (URL inputs are only seen here).
    #[error("{}", .0.message)]
    Policy(Rejection),
    #[error("input format {0:?} is not allowed")]
    UnsupportedFormat(String),
    #[error("the input is not a readable media file ({0})")]
    CorruptInput(String),
    #[error("{0}")]
    Probe(String),
    #[error("{0}")]
    InvalidOutput(String),
    /// ffmpeg failed on an output; `code` and `transient` are its [`RunError`]'s.
    #[error("{message}")]
    Encode {
        code: &'static str,
        transient: bool,
        message: String,
    },
    #[error("ffmpeg produced no {0}")]
    NoOutput(String),
    /// Preparing a ladder's directories or completing its manifests after the run.
    #[error("output {name}: {error}")]
    Package {
        name: String,
        error: reelay_media::PackageError,
    },
    /// Measuring the input's loudness (first pass of `audio.loudness`) gave no answer.
    #[error("measuring the input's loudness: {0}")]
    Analysis(reelay_media::analysis::AnalysisError),
    /// A subtitle stream or caption file of the job could not become WebVTT.
    #[error("captions: {0}")]
    Captions(reelay_media::captions::CaptionError),
    /// The job's watermark image no longer probes as one.
    #[error("{0}")]
    Watermark(crate::side_files::SideFileError),
    #[error("stopped: {0:?}")]
    Stopped(StopReason),
}

impl TaskError for TranscodeError {
    fn code(&self) -> &str {
        use crate::error::ErrorCode;
        match self {
            TranscodeError::Scratch(_) => ErrorCode::ScratchError.as_str(),
            TranscodeError::InvalidSpec(_) => ErrorCode::InvalidSpec.as_str(),
            TranscodeError::InputNotFound(_) => ErrorCode::InputNotFound.as_str(),
            TranscodeError::Storage(_) => ErrorCode::StorageError.as_str(),
            TranscodeError::Fetch(e) => e.code(),
            TranscodeError::Policy(r) => r.code,
            TranscodeError::UnsupportedFormat(_) => ErrorCode::UnsupportedFormat.as_str(),
            TranscodeError::CorruptInput(_) => ErrorCode::CorruptInput.as_str(),
            TranscodeError::Probe(_) => ErrorCode::ProbeFailed.as_str(),
            TranscodeError::InvalidOutput(_) => ErrorCode::InvalidOutput.as_str(),
            TranscodeError::Encode { code, .. } => code,
            TranscodeError::NoOutput(_) => ErrorCode::TranscodeFailed.as_str(),
            TranscodeError::Package { error, .. } => error.code(),
            TranscodeError::Analysis(e) => e.code(),
            TranscodeError::Captions(e) => e.code(),
            TranscodeError::Watermark(e) => e.code(),
            TranscodeError::Stopped(_) => ErrorCode::Stopped.as_str(),
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            TranscodeError::Scratch(_) | TranscodeError::Storage(_) | TranscodeError::Probe(_) => {
                true
            }
            TranscodeError::Fetch(e) => e.is_transient(),
            TranscodeError::Encode { transient, .. } => *transient,
            TranscodeError::Package { error, .. } => error.is_transient(),
            TranscodeError::Analysis(e) => e.is_transient(),
            TranscodeError::Captions(e) => e.is_transient(),
            TranscodeError::Watermark(e) => e.is_transient(),
            _ => false,
        }
    }

    fn stopped(&self) -> Option<StopReason> {
        match self {
            TranscodeError::Stopped(why) => Some(*why),
            _ => None,
        }
    }
}

/// What a transcode attempt ended with.
pub(super) enum Transcoded {
    /// Every output it was to make, stored.
    Outputs(Vec<StoredOutput>),
    /// It probed an input admission could not and the plan splits it: the job's graph grows
    /// by these tasks instead (the input and its probe are in storage for them).
    Split(Box<reelay_jobs::Growth>),
}

/// One attempt, from input to stored outputs. Never panics; every failure is classified.
pub(super) async fn run(cx: &Context<'_>) -> Result<Transcoded, TranscodeError> {
    let st = cx.state;
    let cfg = &st.cfg;
    let claim = cx.claim;
    let job = &claim.job;
    let workdir = cx.workdir;
    let token = cx.token;
    let stopped = || TranscodeError::Stopped(cx.stop.get().unwrap_or(StopReason::Cancelled));

    let _ = tokio::fs::remove_dir_all(workdir).await;
    let out_dir = workdir.join("out");
    if let Err(e) = tokio::fs::create_dir_all(&out_dir).await {
        return Err(TranscodeError::Scratch(format!(
            "cannot create the working directory: {e}"
        )));
    }
    // Admission resolved these already; a stored spec that no longer resolves means this build
    // cannot run what an older one accepted.
    let spec: JobSpec = serde_json::from_str(&job.spec_json)
        .map_err(|e| TranscodeError::InvalidSpec(format!("stored spec unreadable: {e}")))?;
    let mut renditions = reelay_media::resolve_outputs(&spec.outputs)
        .map_err(|e| TranscodeError::InvalidSpec(e.to_string()))?;
    // Beside a split job, this task makes only the outputs that stay whole.
    let payload: crate::task_payloads::TranscodePayload =
        serde_json::from_value(claim.payload.clone()).unwrap_or_default();
    if let Some(names) = &payload.renditions {
        renditions.retain(|r| names.contains(&r.name));
    }

    // Input into the working directory.
    let input = workdir.join("input");
    let fetch = async {
        Ok(if let Some(key) = &job.input_key {
            // Checked again here for jobs stored before the prefix existed (or under another
            // setting): the job's own upload, or a key under the prefix, nothing else.
            if !cfg.key_inputs().may_serve(&job.id, key) {
                return Err(TranscodeError::InputNotFound(
                    "the input key lies outside this cluster's key_input_prefix".into(),
                ));
            }
            tokio::select! {
                r = st.storage.get_to_file(key, &input) => r.map_err(|e| match e {
                    StorageError::NotFound(_) => TranscodeError::InputNotFound(format!("input object {key:?} is gone")),
                    other => TranscodeError::Storage(format!("reading the input: {other}")),
                })?,
                _ = token.cancelled() => return Err(stopped()),
            }
        } else if let Some(url) = &job.input_url {
            tokio::select! {
                r = st.fetcher.download(url, &input, cfg.policy.max_bytes) => r.map_err(TranscodeError::Fetch)?,
                _ = token.cancelled() => return Err(stopped()),
            }
        } else {
            return Err(TranscodeError::InvalidSpec("the job has no input".into()));
        })
    };
    let size = cx.timed(Phase::Fetch, fetch).await?;

    // Probe and policy: a refusal is permanent.
    cfg.policy
        .check_size(size)
        .map_err(TranscodeError::Policy)?;
    // Uploads were probed by the api against the same policy; reuse that result.
    let probe = async {
        let cached = match &job.input_key {
            Some(key) if *key == crate::storage::input_key(&job.id) => st
                .storage
                .get_small(&crate::storage::probe_key(&job.id), 1 << 20)
                .await
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<reelay_media::MediaInfo>(&b).ok()),
            _ => None,
        };
        match cached {
            Some(info) => Ok(info),
            None => reelay_media::probe(&input, &cfg.tools, &cfg.policy).await,
        }
    };
    let probed = cx.timed(Phase::Probe, probe).await;
    let mut info = probed.map_err(|e| match e {
        ProbeError::FormatNotAllowed(f) => TranscodeError::UnsupportedFormat(f),
        ProbeError::Unreadable(m) => TranscodeError::CorruptInput(m),
        e => TranscodeError::Probe(e.to_string()),
    })?;
    cfg.policy
        .check(&info, size, reelay_media::needs(&renditions))
        .map_err(TranscodeError::Policy)?;
    // The job view's input facts (URL, key and tus inputs are first probed here). Only a
    // nicety for people: a store hiccup here must not fail the encode.
    let facts = crate::context::facts(&info, size);
    if job.input_facts.as_ref() != Some(&facts) {
        if let Err(e) = st.store.set_input_facts(&job.id, &facts).await {
            tracing::warn!(job_id = %job.id, error = %e, "input facts not recorded");
        }
    }
    // An input admission could not probe: now the plan can decide whether the job splits.
    if let Some(request) = payload.decide_split {
        if let Some(growth) = split_instead(cx, &spec, &renditions, &info, request, &input).await? {
            return Ok(Transcoded::Split(Box::new(growth)));
        }
    }
    // Interlaced sources must be deinterlaced; where the probe is unsure, idet looks at the
    // first seconds of frames. Not knowing is no reason to fail: the encode goes ahead as
    // before (no deinterlacer), and a file idet cannot read fails the encode anyway.
    if renditions.iter().any(|r| r.needs_video()) {
        let scan = reelay_media::detect_scan(&mut info, &input, &cfg.tools, &cfg.policy);
        if let Err(e) = cx.timed(Phase::Probe, scan).await {
            tracing::warn!(code = e.code(), error = %e, "scan of the input unknown; not deinterlacing");
        }
    }

    // Caption tracks (the input's subtitle streams and the job's caption files) as WebVTT, and
    // the watermark image, before any encode needs them.
    let captions = tokio::select! {
        r = super::side_inputs::caption_files(st, &job.id, &spec, &info, &input, workdir) => r?,
        _ = token.cancelled() => return Err(stopped()),
    };
    let watermark = super::side_inputs::watermark(st, &job.id, &spec, workdir).await?;
    let burn_in = super::side_inputs::burn_in(cfg, &spec, &captions, workdir).await?;
    let extras = reelay_media::Extras {
        watermark: watermark.as_ref().map(|w| w.as_extra()),
        burn_in,
    };

    // Loudness, first pass: the input measured once for every output that asked. Receipts are
    // gathered per output name as each output is written.
    let meter = Meter {
        tools: &cfg.tools,
        policy: &cfg.policy,
        timeout: Duration::from_secs(cfg.job_timeout_seconds),
    };
    let input_loudness = if receipts::wants_loudness(&renditions) {
        tokio::select! {
            r = cx.timed(Phase::Analyse, meter.input_loudness(&input, &info)) => r.map_err(TranscodeError::Analysis)?,
            _ = token.cancelled() => return Err(stopped()),
        }
    } else {
        None
    };
    let quality_on = receipts::wants_quality(
        spec.quality_report,
        info.best_duration(),
        cfg.quality_report_max_seconds,
    );
    let mut found: std::collections::HashMap<String, Receipts> = Default::default();

    // Encode each output; progress is the share of outputs done plus the current one's fraction.
    let n = renditions.len() as f64;
    // Media seconds actually written, for the encode speed (never the header's claim).
    let mut media_seconds = 0.0;
    // Wall seconds of the ffmpeg runs alone (receipts are not encoding).
    let mut encode_seconds = 0.0;
    for (i, r) in renditions.iter().enumerate() {
        let mut inv = reelay_media::build_with(r, &info, &cfg.policy, &input, &out_dir, extras)
            .map_err(|e| TranscodeError::InvalidOutput(format!("{}: {e}", r.name)))?;
        let package = |error| TranscodeError::Package {
            name: r.name.clone(),
            error,
        };
        reelay_media::package::prepare(r, &out_dir).map_err(package)?;
        if let Some(f) = input_loudness
            .as_ref()
            .and_then(|l| receipts::normalize_filter(r, &info, l))
        {
            reelay_media::argv::add_audio_filter(&mut inv, &f);
        }
        // Quality measured by the encoder itself where it can (no second decode, issue 18).
        let in_encode = quality_on
            .then(|| receipts::in_encode(r, &info))
            .flatten()
            .filter(|_| reelay_media::quality::request_x264_stats(&mut inv.args));
        if cfg.tools.realtime_input {
            if let Some(i) = inv.args.iter().position(|a| a == "-i") {
                inv.args.insert(i, "-re".into());
            }
        }
        let limits = RunLimits {
            stall_timeout: Duration::from_secs(cfg.stall_timeout_seconds),
            time_limit: Duration::from_secs(cfg.job_timeout_seconds),
            max_out_time: Some(cfg.policy.out_time_limit(inv.duration)),
        };
        let encoding = Instant::now();
        let run = reelay_media::run_ffmpeg(&cfg.tools, &inv.args, workdir, limits, token, |p| {
            let frac = (i as f64 + p.fraction(inv.duration)) / n;
            cx.progress
                .store(frac.min(0.999).to_bits(), Ordering::Relaxed);
            let later = renditions.len() - i - 1;
            if let Some(eta) = p.eta_seconds(inv.duration, later) {
                let at = reelay_jobs::now_millis().saturating_add((eta * 1000.0) as i64);
                cx.eta_at.store(at, Ordering::Relaxed);
            }
        })
        .instrument(tracing::info_span!("phase", phase = "encode", output = %r.name))
        .await;
        cx.record(Phase::Encode, encoding.elapsed());
        encode_seconds += encoding.elapsed().as_secs_f64();
        let e = match run {
            Ok(stats) => {
                media_seconds += stats.last.out_time;
                // Manifests completed from the segments ffmpeg wrote (codecs strings).
                reelay_media::package::finish(r, &info, &out_dir).map_err(package)?;
                if !captions.is_empty() {
                    let ts_start = ts_start(cfg, r, &out_dir).await;
                    let seconds = reelay_media::argv::output_seconds(r, &info);
                    reelay_media::package::add_captions(r, &out_dir, &captions, ts_start, seconds)
                        .map_err(package)?;
                }
                let got = tokio::select! {
                    got = cx.timed(Phase::Receipt, measure_output(&meter, r, &info, &input, &out_dir, workdir, input_loudness.as_ref(), quality_on, &stats, in_encode.as_ref())) => got,
                    _ = token.cancelled() => return Err(stopped()),
                };
                found.insert(r.name.clone(), got);
                continue;
            }
            Err(RunError::Cancelled) => return Err(stopped()),
            Err(e) => e,
        };
        let message = match &e {
            _ if e.code() == "output_too_large" => format!(
                "output {} reached the file size limit of {} bytes",
                r.name, cfg.tools.limits.file_size_bytes
            ),
            RunError::Stalled(d) => format!(
                "ffmpeg made no progress for {} s on output {}",
                d.as_secs(),
                r.name
            ),
            RunError::TimedOut(d) => {
                format!("encoding exceeded the time limit of {} s", d.as_secs())
            }
            RunError::Failed {
                signal: Some(_),
                status,
                ..
            } => format!("ffmpeg died ({status}) on output {}", r.name),
            RunError::Failed { stderr_tail, .. } => {
                let tail = stderr_tail.replace(&workdir.display().to_string(), "");
                format!("ffmpeg failed on output {}: {}", r.name, tail.trim())
            }
            RunError::Overran { out_time, limit } => format!(
                "output {} reached {out_time:.1} s but the input was probed at {:.1} s \
                 (at most {limit:.1} s allowed): the input holds more than its header says",
                r.name, inv.duration
            ),
            RunError::FrameTooLarge => format!(
                "the input has frames larger than {}x{} pixels after its start",
                cfg.policy.max_width, cfg.policy.max_height
            ),
            other => other.to_string(),
        };
        return Err(TranscodeError::Encode {
            code: e.code(),
            transient: e.is_transient(),
            message,
        });
    }
    let secs = encode_seconds;
    if secs > 0.0 && media_seconds > 0.0 {
        metrics::histogram!(m::ENCODE_SPEED).record(media_seconds / secs);
        cx.record_speed(media_seconds / secs);
    }

    // The caption tracks as the job's own sidecar outputs (`captions/…`), whatever packages
    // them: a file output's player (or an editor) takes them beside it.
    for (t, vtt) in &captions {
        let dest = out_dir.join(&t.file);
        let copied = dest
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::copy(vtt, &dest));
        if let Err(e) = copied {
            return Err(TranscodeError::Scratch(format!("writing {}: {e}", t.file)));
        }
    }

    // Upload every file of this attempt under its own prefix.
    let prefix = cx.prefix;
    let files =
        walk(&out_dir).map_err(|e| TranscodeError::Scratch(format!("listing outputs: {e}")))?;
    let publish = async {
        let mut sizes = std::collections::HashMap::new();
        for rel in &files {
            if token.is_cancelled() {
                return Err(stopped());
            }
            let key = format!("{prefix}/{rel}");
            let n = st
                .storage
                .put_scratch_file(&key, &out_dir.join(rel))
                .await
                .map_err(|e| TranscodeError::Storage(format!("storing output {rel}: {e}")))?;
            sizes.insert(rel.clone(), n);
        }
        Ok(sizes)
    };
    let sizes = cx.timed(Phase::Publish, publish).await?;
    let mut outputs = Vec::new();
    // A CMAF output lists both of its manifests (HLS master playlist and DASH MPD).
    for r in &renditions {
        let got = found.remove(&r.name).unwrap_or_default();
        for name in r.primary_files() {
            let Some(size) = sizes.get(&name) else {
                return Err(TranscodeError::NoOutput(name));
            };
            outputs.push(StoredOutput {
                key: format!("{prefix}/{name}"),
                size: *size,
                content_type: content_type(&name).into(),
                name,
                loudness: got.loudness,
                quality: got.quality,
                rungs: got.rungs.clone(),
            });
        }
    }
    for (t, _) in &captions {
        let Some(size) = sizes.get(&t.file) else {
            return Err(TranscodeError::NoOutput(t.file.clone()));
        };
        outputs.push(StoredOutput {
            key: format!("{prefix}/{}", t.file),
            size: *size,
            content_type: content_type(&t.file).into(),
            name: t.file.clone(),
            loudness: None,
            quality: None,
            rungs: vec![],
        });
    }
    Ok(Transcoded::Outputs(outputs))
}

/// The first timestamp of an MPEG-TS HLS output (its first rung's first segment), which its
/// subtitle sidecars must map to; `None` for fMP4 packagings (their media starts at zero) and,
/// logged, when it cannot be read (the cues are then placed as if the media started at zero).
async fn ts_start(
    cfg: &crate::config::Config,
    r: &reelay_media::Rendition,
    out_dir: &Path,
) -> Option<u64> {
    use reelay_media::plan::{Packaging, Segments};
    if !matches!(
        r.packaging,
        Packaging::Hls {
            segments: Segments::Ts,
            ..
        }
    ) {
        return None;
    }
    let first = out_dir.join(&r.name).join("v0/seg_00000.ts");
    match reelay_media::captions::ts_start_90k(&cfg.tools, &first).await {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(output = %r.name, code = e.code(), error = %e, "TS start time unknown; subtitles unmapped");
            None
        }
    }
}

/// The receipts of one output.
#[derive(Debug, Default)]
struct Receipts {
    loudness: Option<reelay_protocol::LoudnessReceipt>,
    quality: Option<reelay_protocol::QualityReceipt>,
    rungs: Vec<reelay_protocol::RungQuality>,
}

/// Measures an output just written: its loudness (when it asked, file outputs only: a ladder's
/// audio went through the same filter and is reported with the input's values) and its quality
/// (video outputs, when on: from the encoder's own summaries when `in_encode` says it gave them,
/// else with the filters: files directly, ladders rung by rung from their segments assembled
/// in `scratch`). A receipt that cannot be measured is left out and logged:
/// the output itself is good, and failing the job over its receipt would lose it.
#[allow(clippy::too_many_arguments)]
async fn measure_output(
    meter: &Meter<'_>,
    r: &reelay_media::Rendition,
    info: &reelay_media::MediaInfo,
    input: &Path,
    out_dir: &Path,
    scratch: &Path,
    input_loudness: Option<&reelay_media::loudness::LoudnessStats>,
    quality_on: bool,
    stats: &reelay_media::RunStats,
    in_encode: Option<&receipts::InEncode>,
) -> Receipts {
    let written = &stats.last;
    let mut got = Receipts::default();
    let file = out_dir.join(r.primary_file());
    let is_file = r.container().is_some();
    if let (Some(mode), Some(before)) = (receipts::loudness_mode(r), input_loudness) {
        let has_video = r.video.is_some() && info.video().is_some();
        let after = if is_file {
            match meter.output_loudness(r, &file, has_video).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(output = %r.name, code = e.code(), error = %e, "output loudness not measured");
                    None
                }
            }
        } else {
            None
        };
        got.loudness = Some(receipts::loudness_receipt(mode, before, after.as_ref()));
    }
    if !quality_on {
        return got;
    }
    let measured = match in_encode {
        Some(_) => reelay_media::quality::parse_x264_stats(&stats.encoder_summaries),
        None => vec![],
    };
    let container = r.packaging.format_name();
    let record = |q: &reelay_protocol::QualityReceipt| {
        if let Some(p) = q.psnr_db {
            metrics::histogram!(m::OUTPUT_PSNR, "container" => container).record(p);
        }
        metrics::histogram!(m::OUTPUT_SSIM, "container" => container).record(q.ssim);
    };
    match in_encode {
        Some(receipts::InEncode::File) if measured.len() == 1 => {
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let q = receipts::encoder_receipt(
                &measured[0],
                receipts::bitrate_kbps(size, written.out_time),
            );
            record(&q);
            got.quality = Some(q);
            return got;
        }
        Some(receipts::InEncode::Ladder(dims)) => {
            match receipts::rung_receipts(dims, &measured) {
                Some(rungs) => {
                    rungs.iter().for_each(|g| record(&g.quality));
                    got.rungs = rungs;
                }
                None => tracing::warn!(
                    output = %r.name,
                    rungs = dims.len(),
                    reported = measured.len(),
                    "rung quality receipts not measured: the encoders did not report one per rung"
                ),
            }
            return got;
        }
        Some(receipts::InEncode::File) => tracing::warn!(
            output = %r.name,
            reported = measured.len(),
            "the encoder did not report its quality; measuring with the filters"
        ),
        None => {}
    }
    if let Some(dims) = receipts::ladder_dims(r, info).filter(|_| !is_file) {
        let dir = out_dir.join(&r.name);
        match meter
            .ladder_quality(r, &dims, &dir, scratch, input, info, written)
            .await
        {
            Ok(rungs) => {
                rungs.iter().for_each(|g| record(&g.quality));
                got.rungs = rungs;
            }
            Err(e) => {
                tracing::warn!(output = %r.name, code = e.code(), transient = e.is_transient(), error = %e, "rung quality receipts not measured")
            }
        }
        return got;
    }
    if is_file {
        match meter.quality(r, &file, input, info, written).await {
            Ok(Some(q)) => {
                record(&q);
                got.quality = Some(q);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(output = %r.name, code = e.code(), error = %e, "quality receipt not measured")
            }
        }
    }
    got
}

/// The graph this job grows into when the plan splits its input (`None`: it does not, and this
/// task encodes everything as before). The split task and the whole outputs' task read the
/// input from storage: a fetched URL input is stored as the job's own input (a tus or key
/// input is there already), and the probe beside it so nobody probes the same bytes again.
async fn split_instead(
    cx: &Context<'_>,
    spec: &JobSpec,
    renditions: &[reelay_media::Rendition],
    info: &reelay_media::MediaInfo,
    request: reelay_media::split::SplitRequest,
    input: &Path,
) -> Result<Option<reelay_jobs::Growth>, TranscodeError> {
    let st = cx.state;
    let job = &cx.claim.job;
    let own_key = crate::storage::input_key(&job.id);
    let stored_key = if job.input_key.is_none() {
        Some(own_key.clone())
    } else {
        None
    };
    let grower = cx
        .claim
        .task_id
        .strip_prefix(&format!("{}.", job.id))
        .unwrap_or(reelay_jobs::TRANSCODE);
    let settings = st.split_settings(request).await;
    let (view, _) =
        crate::split_graph::decide(spec, 0.0, renditions, Some(info), settings, request);
    if !view.applied {
        // The view said `pending`: now it says why not. A nicety, as the input facts are.
        match serde_json::to_string(&view) {
            Ok(json) => {
                if let Err(e) = st.store.set_split_view(&job.id, &json).await {
                    tracing::warn!(job_id = %job.id, error = %e, "split decision not recorded");
                }
            }
            Err(e) => tracing::warn!(error = %e, "split decision does not encode"),
        }
        return Ok(None);
    }
    let Some(growth) = crate::split_graph::grown_tasks(
        grower,
        spec,
        renditions,
        info,
        settings,
        request,
        stored_key.clone(),
    ) else {
        return Ok(None);
    };
    let storing = async {
        if let Some(key) = &stored_key {
            st.storage.put_scratch_file(key, input).await?;
        }
        if let Ok(json) = serde_json::to_vec(info) {
            st.storage
                .put_bytes(&crate::storage::probe_key(&job.id), json)
                .await?;
        }
        Ok::<_, StorageError>(())
    };
    tokio::select! {
        r = cx.timed(Phase::Publish, storing) => r.map_err(|e| TranscodeError::Storage(format!("storing the input for its split: {e}")))?,
        _ = cx.token.cancelled() => return Err(TranscodeError::Stopped(cx.stop.get().unwrap_or(StopReason::Cancelled))),
    }
    tracing::info!(
        tasks = growth.tasks.len(),
        "input probed: the job splits, its graph grows"
    );
    Ok(Some(growth))
}

/// Relative paths of every file under `dir`, sorted.
pub(super) fn walk(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = vec![];
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                if let Ok(rel) = entry.path().strip_prefix(dir) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_know_their_code_and_whether_to_retry() {
        let cases: [(TranscodeError, &str, bool); 8] = [
            (TranscodeError::Scratch("x".into()), "scratch_error", true),
            (TranscodeError::Storage("x".into()), "storage_error", true),
            (TranscodeError::Probe("x".into()), "probe_failed", true),
            (
                TranscodeError::InvalidSpec("x".into()),
                "invalid_spec",
                false,
            ),
            (
                TranscodeError::InputNotFound("x".into()),
                "input_not_found",
                false,
            ),
            (
                TranscodeError::CorruptInput("x".into()),
                "corrupt_input",
                false,
            ),
            (
                TranscodeError::Encode {
                    code: "stalled",
                    transient: true,
                    message: "m".into(),
                },
                "stalled",
                true,
            ),
            (
                TranscodeError::NoOutput("a.mp4".into()),
                "transcode_failed",
                false,
            ),
        ];
        for (e, code, transient) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.is_transient(), transient, "{code}");
            assert_eq!(e.stopped(), None);
        }
        let stop = TranscodeError::Stopped(StopReason::Shutdown);
        assert_eq!(stop.stopped(), Some(StopReason::Shutdown));
    }
}
