//! `reelay submit`: create a job from a local file (streamed upload), a URL or a storage key.

use super::{context, emit, emit_json, wait, UsageError};
use crate::client::Client;
use crate::progress;
use crate::resumable;
use anyhow::Context;
use clap::Args;
use reelay_protocol::{CaptionFileSpec, InputSpec, JobSpec, OutputSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// A local video file (uploaded) or an http(s):// URL the server fetches.
    #[arg(
        value_name = "INPUT",
        required_unless_present_any = ["key", "spec"],
        conflicts_with = "key"
    )]
    pub input: Option<String>,

    /// Use an object already in the cluster's storage as input, instead of INPUT.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// Add an output from a named preset (see `reelay presets`). Repeatable.
    #[arg(long = "preset", value_name = "NAME")]
    pub presets: Vec<String>,

    /// Add a custom output, given as OutputSpec JSON, e.g.
    /// '{"name":"small","container":"mp4","video":{"codec":"h264","height":240}}'. Repeatable.
    #[arg(long = "output", value_name = "JSON", value_parser = parse_output)]
    pub outputs: Vec<OutputSpec>,

    /// Read a whole JobSpec JSON file ('-' for stdin); its outputs are used, INPUT or --key
    /// replaces its input.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,

    /// Scheduling priority: higher runs first.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,

    /// Your own context for the job, KEY=VALUE (e.g. order_id=A-1); shown by `reelay status`,
    /// returned in every job view and webhook, and found again with `reelay list --metadata`.
    /// Repeatable; at most 16 keys of A-Z a-z 0-9 _ . - (the server checks the limits).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,

    /// Makes retried submissions create the job only once.
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
    pub idempotency_key: Option<String>,

    /// Follow the job until it finishes, like `reelay wait`.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECS", requires = "wait", value_parser = wait::parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print the job as JSON instead of its id.
    #[arg(long)]
    pub json: bool,

    /// A caption file sent with an uploaded INPUT (SRT, WebVTT or ASS): it becomes a WebVTT
    /// sidecar and a subtitle track of every HLS/DASH/CMAF output. FILE, then optionally
    /// `,lang=` a BCP 47 tag (en, pt-BR) and `,label=` its display name (the rest of the
    /// argument, commas included), e.g. `--caption fr.srt,lang=fr,label=Français`. Repeatable.
    #[arg(long = "caption", value_name = "FILE[,lang=LANG][,label=NAME]", value_parser = parse_caption)]
    pub captions: Vec<CaptionArg>,

    /// Burn the caption track of this language (a --caption file's or a subtitle stream of the
    /// input) into the picture of every MP4 output; the sidecars stay as well.
    #[arg(long = "burn-in", value_name = "LANG")]
    pub burn_in: Option<String>,

    /// A PNG or JPEG laid over every video output of an uploaded INPUT (each file, the
    /// thumbnail, every rung of a ladder, every storyboard tile), at the same relative place.
    #[arg(long, value_name = "IMAGE")]
    pub watermark: Option<PathBuf>,

    /// Where the watermark goes: top-left, top-right, bottom-left, bottom-right (the server's
    /// default) or center.
    #[arg(long, value_name = "POSITION", requires = "watermark", value_parser = [
        "top-left", "top-right", "bottom-left", "bottom-right", "center"
    ])]
    pub watermark_position: Option<String>,

    /// The watermark's width as a fraction of the video width (0.01-1; server default 0.15).
    #[arg(long, value_name = "FRACTION", requires = "watermark")]
    pub watermark_scale: Option<f64>,

    /// The distance from the edges as a fraction of the video width (0-0.25; default 0.03).
    #[arg(long, value_name = "FRACTION", requires = "watermark")]
    pub watermark_margin: Option<f64>,

    /// The watermark's opacity, 0-1 (default 0.8).
    #[arg(long, value_name = "FRACTION", requires = "watermark")]
    pub watermark_opacity: Option<f64>,

    /// Upload files of at least this size resumably (tus, `/v1/uploads`): after Ctrl-C or a
    /// lost connection, the same `reelay submit` continues where it stopped. Bytes, or with a
    /// suffix KiB, MiB, GiB; 0 for every file. A job with --caption or --watermark is always
    /// one multipart request (a resumable upload cannot carry those files).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub resumable_above: u64,
}

/// One `--caption`: the local file and what the spec says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionArg {
    pub path: PathBuf,
    pub language: Option<String>,
    pub label: Option<String>,
}

/// `FILE[,lang=LANG][,label=NAME]`. The label takes the rest of the argument, so a display
/// name may hold commas; the server checks the language tag and the file's content.
pub fn parse_caption(s: &str) -> Result<CaptionArg, String> {
    let (path, mut rest) = match s.split_once(',') {
        Some((path, rest)) => (path, Some(rest)),
        None => (s, None),
    };
    if path.is_empty() {
        return Err(format!(
            "{s:?}: expected FILE[,lang=LANG][,label=NAME], e.g. fr.srt,lang=fr,label=Français"
        ));
    }
    let mut c = CaptionArg {
        path: PathBuf::from(path),
        language: None,
        label: None,
    };
    while let Some(r) = rest {
        if let Some(label) = r.strip_prefix("label=") {
            c.label = Some(label.to_string());
            break;
        }
        let (item, next) = match r.split_once(',') {
            Some((item, next)) => (item, Some(next)),
            None => (r, None),
        };
        match item.strip_prefix("lang=") {
            Some(lang) if !lang.is_empty() => c.language = Some(lang.to_string()),
            _ => {
                return Err(format!(
                    "{item:?}: expected lang=LANG or label=NAME after FILE,"
                ))
            }
        }
        rest = next;
    }
    Ok(c)
}

/// The files a submission carries beside its input (multipart parts between `spec` and `file`).
#[derive(Debug, Default)]
pub struct SideFiles {
    /// `captions` parts, in the order of the spec's `captions.files`.
    pub captions: Vec<crate::client::SidePart>,
    pub watermark: Option<crate::client::SidePart>,
}

impl SideFiles {
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty() && self.watermark.is_none()
    }

    /// Reads every side file the flags name, before any request: a missing or unreadable file
    /// is the user's to fix, and must not cost an upload first.
    pub fn read(args: &SubmitArgs) -> anyhow::Result<SideFiles> {
        let part = |kind: &str,
                    name: &'static str,
                    path: &Path|
         -> anyhow::Result<crate::client::SidePart> {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {kind} {}", path.display()))?;
            if !meta.is_file() {
                anyhow::bail!("{kind} {} is not a regular file", path.display());
            }
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read {kind} {}", path.display()))?;
            Ok(crate::client::SidePart {
                name,
                file_name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| name.to_string()),
                bytes,
            })
        };
        Ok(SideFiles {
            captions: args
                .captions
                .iter()
                .map(|c| part("caption file", "captions", &c.path))
                .collect::<anyhow::Result<_>>()?,
            watermark: args
                .watermark
                .as_deref()
                .map(|p| part("watermark image", "watermark", p))
                .transpose()?,
        })
    }
}

/// The spec's `captions` and `watermark` from the flags. They travel with an uploaded file
/// only (the API takes side files in a multipart submission), and the parts sent must be the
/// ones the spec declares, so a `--spec` file that declares its own is refused here.
fn side_spec(args: &SubmitArgs, spec: &mut JobSpec, source: &Source) -> Result<(), UsageError> {
    let flags = !args.captions.is_empty() || args.watermark.is_some() || args.burn_in.is_some();
    let declared = spec.captions.as_ref().is_some_and(|c| !c.files.is_empty());
    if declared {
        return Err(UsageError(
            "the --spec file declares captions.files; give caption files with --caption              FILE[,lang=LANG][,label=NAME] instead (the CLI sends the parts it declares)"
                .into(),
        ));
    }
    if spec.watermark.is_some() && args.watermark.is_none() {
        return Err(UsageError(
            "the --spec file has a watermark: give its image with --watermark IMAGE".into(),
        ));
    }
    if (!args.captions.is_empty() || args.watermark.is_some()) && *source == Source::Inline {
        return Err(UsageError(
            "--caption and --watermark need a local INPUT file (they are sent with its upload)"
                .into(),
        ));
    }
    if !flags {
        return Ok(());
    }
    let captions = spec.captions.get_or_insert_with(Default::default);
    captions
        .files
        .extend(args.captions.iter().map(|c| CaptionFileSpec {
            language: c.language.clone(),
            label: c.label.clone(),
        }));
    if let Some(lang) = &args.burn_in {
        captions.burn_in = Some(lang.clone());
    }
    if spec
        .captions
        .as_ref()
        .is_some_and(|c| *c == Default::default())
    {
        spec.captions = None;
    }
    if args.watermark.is_some() {
        // The flags add to (and override) a --spec file's watermark options.
        let mut mark = match spec.watermark.take() {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        if let Some(p) = &args.watermark_position {
            mark.insert("position".into(), p.clone().into());
        }
        for (key, value) in [
            ("scale", args.watermark_scale),
            ("margin", args.watermark_margin),
            ("opacity", args.watermark_opacity),
        ] {
            if let Some(v) = value {
                mark.insert(key.into(), v.into());
            }
        }
        spec.watermark = Some(serde_json::Value::Object(mark));
    }
    Ok(())
}

/// `123`, `64MiB`, `2GiB` (also `K`, `M`, `G` as binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        other => return Err(format!("{other:?}: use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `KEY=VALUE`, split at the first `=` (a value may contain more).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected KEY=VALUE, e.g. order_id=A-1")),
    }
}

fn parse_output(s: &str) -> Result<OutputSpec, String> {
    serde_json::from_str(s).map_err(|e| format!("not an output spec: {e}"))
}

fn parse_idempotency_key(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 255 printable ASCII characters without spaces".into());
    }
    Ok(s.to_string())
}

/// Where the input comes from, as far as the client is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Sent inside the JSON spec (`url` or `key`).
    Inline,
    /// A local file to upload as the multipart `file` part.
    Upload(PathBuf),
}

fn is_url(input: &str) -> bool {
    let lower = input.get(..8).unwrap_or(input).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Builds the job spec from the flags and, if given, the parsed `--spec` file.
pub fn build_spec(
    args: &SubmitArgs,
    spec_file: Option<JobSpec>,
) -> Result<(JobSpec, Source), UsageError> {
    let mut spec = spec_file.unwrap_or_default();
    let source = match (&args.input, &args.key) {
        (Some(input), _) if is_url(input) => {
            spec.input = Some(InputSpec {
                url: Some(input.clone()),
                ..Default::default()
            });
            Source::Inline
        }
        (Some(input), _) if input.is_empty() => {
            return Err(UsageError("INPUT must not be empty".into()))
        }
        (Some(path), _) => {
            spec.input = None;
            Source::Upload(PathBuf::from(path))
        }
        (None, Some(key)) if key.is_empty() => {
            return Err(UsageError("--key must not be empty".into()))
        }
        (None, Some(key)) => {
            spec.input = Some(InputSpec {
                key: Some(key.clone()),
                ..Default::default()
            });
            Source::Inline
        }
        (None, None) => match &spec.input {
            Some(InputSpec { url: Some(_), .. })
            | Some(InputSpec { key: Some(_), .. })
            | Some(InputSpec {
                upload: Some(_), ..
            }) => Source::Inline,
            _ => {
                return Err(UsageError(
                    "no input: give a file or URL, or --key, or an input in the --spec file".into(),
                ))
            }
        },
    };
    spec.outputs
        .extend(args.presets.iter().map(|p| OutputSpec::preset(p)));
    spec.outputs.extend(args.outputs.iter().cloned());
    if spec.outputs.is_empty() {
        return Err(UsageError(
            "at least one output is required: use --preset NAME (see `reelay presets`), \
             --output JSON or --spec FILE"
                .into(),
        ));
    }
    if let Some(priority) = args.priority {
        spec.priority = priority;
    }
    // Flags add to (and override) the --spec file's metadata.
    spec.metadata.extend(args.metadata.iter().cloned());
    side_spec(args, &mut spec, &source)?;
    Ok((spec, source))
}

fn read_spec_file(path: &Path) -> anyhow::Result<JobSpec> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the job spec from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read job spec {}", path.display()))?
    };
    serde_json::from_str(&text).map_err(|e| {
        anyhow::Error::new(UsageError(format!(
            "{} is not a valid job spec: {e}",
            path.display()
        )))
    })
}

/// A large file: uploaded with tus (resuming an earlier attempt), then the job is created from
/// the upload. The state file is dropped only once the job exists.
async fn submit_resumable(
    client: &Client,
    spec: &JobSpec,
    path: &Path,
    meta: &std::fs::Metadata,
    idempotency_key: Option<&str>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<reelay_protocol::JobView> {
    let key = resumable::FileKey::of(&client.server(), path, meta);
    let id = resumable::upload(client, path, &key, bar)
        .await
        .map_err(|e| context(e, format!("cannot upload {}", path.display())))?;
    // At the upload's own address: through the edge it reaches the cluster holding the upload.
    let view = client
        .submit_from_upload(&id, spec, idempotency_key)
        .await
        .map_err(|e| context(e, "cannot submit job"))?;
    resumable::forget(&key);
    Ok(view)
}

pub async fn run(client: &Client, args: &SubmitArgs) -> anyhow::Result<()> {
    let spec_file = args.spec.as_deref().map(read_spec_file).transpose()?;
    let (spec, source) = build_spec(args, spec_file)?;
    let sides = SideFiles::read(args)?;
    let idempotency_key = args.idempotency_key.as_deref();
    let view = match &source {
        Source::Inline => client
            .submit(&spec, idempotency_key)
            .await
            .map_err(|e| context(e, "cannot submit job"))?,
        Source::Upload(path) => {
            let meta = tokio::fs::metadata(path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !meta.is_file() {
                anyhow::bail!("{} is not a regular file", path.display());
            }
            let bar = progress::bytes_bar(meta.len(), "uploading");
            if meta.len() >= args.resumable_above && sides.is_empty() {
                let result =
                    submit_resumable(client, &spec, path, &meta, idempotency_key, &bar).await;
                bar.finish_and_clear();
                result?
            } else {
                let result = client
                    .submit_upload(&spec, path, meta.len(), &sides, idempotency_key, &bar)
                    .await;
                bar.finish_and_clear();
                result.map_err(|e| context(e, "cannot submit job"))?
            }
        }
    };
    tracing::info!(job = %view.id, status = %view.status, "submitted");
    if args.wait {
        if !args.json {
            emit(&view.id)?;
        }
        return wait::follow(client, &view.id, args.timeout, args.json).await;
    }
    if args.json {
        emit_json(&view)
    } else {
        emit(&view.id)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: SubmitArgs,
    }

    fn args(argv: &[&str]) -> SubmitArgs {
        Harness::try_parse_from(std::iter::once("submit").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn local_file_is_uploaded_without_input_in_the_spec() {
        let a = args(&["clip.mov", "--preset", "mp4-720p", "--preset", "hls-abr"]);
        let (spec, source) = build_spec(&a, None).unwrap();
        assert_eq!(source, Source::Upload(PathBuf::from("clip.mov")));
        assert_eq!(spec.input, None);
        assert_eq!(
            spec.outputs,
            vec![
                OutputSpec::preset("mp4-720p"),
                OutputSpec::preset("hls-abr")
            ]
        );
        assert_eq!(spec.priority, 0);
    }

    #[test]
    fn metadata_flags_add_to_the_spec_files() {
        let a = args(&[
            "clip.mov",
            "--preset",
            "p",
            "--metadata",
            "order_id=A-1",
            "--metadata",
            "note=a=b",
        ]);
        let file: JobSpec =
            serde_json::from_str(r#"{"outputs":[],"metadata":{"order_id":"old","tenant":"acme"}}"#)
                .unwrap();
        let (spec, _) = build_spec(&a, Some(file)).unwrap();
        let got: Vec<(&str, &str)> = spec
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [("note", "a=b"), ("order_id", "A-1"), ("tenant", "acme")]
        );
        for bad in ["novalue", "=v"] {
            assert!(parse_key_value(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_key_value("k=").unwrap(), ("k".into(), String::new()));
    }

    #[test]
    fn urls_and_keys_go_inline() {
        let a = args(&[
            "HTTPS://example.com/a.mp4",
            "--preset",
            "p",
            "--priority",
            "-3",
        ]);
        let (spec, source) = build_spec(&a, None).unwrap();
        assert_eq!(source, Source::Inline);
        assert_eq!(
            spec.input.unwrap().url.as_deref(),
            Some("HTTPS://example.com/a.mp4")
        );
        assert_eq!(spec.priority, -3);

        let a = args(&["--key", "uploads/a.mp4", "--preset", "p"]);
        let (spec, source) = build_spec(&a, None).unwrap();
        assert_eq!(source, Source::Inline);
        assert_eq!(
            spec.input,
            Some(InputSpec {
                key: Some("uploads/a.mp4".into()),
                ..Default::default()
            })
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["input"], serde_json::json!({"key": "uploads/a.mp4"}));
    }

    #[test]
    fn custom_outputs_are_parsed_and_appended_after_presets() {
        let a = args(&[
            "in.mp4",
            "--output",
            r#"{"name":"small","container":"mp4","video":{"codec":"h264","height":240}}"#,
            "--preset",
            "mp4-720p",
        ]);
        let (spec, _) = build_spec(&a, None).unwrap();
        assert_eq!(spec.outputs.len(), 2);
        assert_eq!(spec.outputs[0].preset.as_deref(), Some("mp4-720p"));
        assert_eq!(spec.outputs[1].name.as_deref(), Some("small"));
        assert_eq!(spec.outputs[1].video.as_ref().unwrap().height, Some(240));
    }

    #[test]
    fn captions_and_watermark_flags_become_the_specs_side_fields() {
        let a = args(&[
            "in.mp4",
            "--preset",
            "cmaf",
            "--caption",
            "en.srt",
            "--caption",
            "fr.srt,lang=fr,label=Français, sous-titres",
            "--caption",
            "de.vtt,label=Deutsch,lang=xx",
            "--burn-in",
            "fr",
            "--watermark",
            "logo.png",
            "--watermark-position",
            "top-left",
            "--watermark-scale",
            "0.2",
        ]);
        let (spec, source) = build_spec(&a, None).unwrap();
        assert_eq!(source, Source::Upload("in.mp4".into()));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["captions"],
            serde_json::json!({
                "files": [{}, {"language": "fr", "label": "Français, sous-titres"},
                          {"label": "Deutsch,lang=xx"}],
                "burn_in": "fr"
            })
        );
        assert_eq!(
            json["watermark"],
            serde_json::json!({"position": "top-left", "scale": 0.2})
        );
        assert_eq!(a.captions[0].path, PathBuf::from("en.srt"));
        // Nothing asked, nothing sent.
        let (spec, _) = build_spec(&args(&["in.mp4", "--preset", "p"]), None).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert!(json.get("captions").is_none() && json.get("watermark").is_none());
        // A bare --watermark sends an empty object: the server's defaults.
        let (spec, _) = build_spec(
            &args(&["in.mp4", "--preset", "p", "--watermark", "m.png"]),
            None,
        )
        .unwrap();
        assert_eq!(spec.watermark, Some(serde_json::json!({})));
    }

    #[test]
    fn side_files_need_an_upload_and_their_own_flags() {
        for bad in [",lang=en", "a.srt,lang=", "a.srt,language=en", "a.srt,en"] {
            assert!(parse_caption(bad).is_err(), "{bad}");
        }
        // Over a URL or key there is no multipart request to carry them.
        for argv in [
            &["https://x/y.mp4", "--preset", "p", "--caption", "a.srt"][..],
            &["--key", "k", "--preset", "p", "--watermark", "m.png"][..],
        ] {
            let err = build_spec(&args(argv), None).unwrap_err();
            assert!(err.0.contains("local INPUT"), "{err}");
        }
        // The watermark options need the image.
        assert!(Harness::try_parse_from([
            "submit",
            "in.mp4",
            "--preset",
            "p",
            "--watermark-opacity",
            "0.5"
        ])
        .is_err());
        assert!(Harness::try_parse_from([
            "submit",
            "in.mp4",
            "--watermark",
            "m.png",
            "--watermark-position",
            "middle"
        ])
        .is_err());
        // A spec file's own caption files or watermark cannot be sent by the CLI.
        let file: JobSpec = serde_json::from_str(
            r#"{"outputs":[{"preset":"a"}],"captions":{"files":[{"language":"en"}]}}"#,
        )
        .unwrap();
        let err = build_spec(&args(&["in.mp4", "--spec", "j.json"]), Some(file)).unwrap_err();
        assert!(err.0.contains("--caption"), "{err}");
        let file: JobSpec =
            serde_json::from_str(r#"{"outputs":[{"preset":"a"}],"watermark":{"opacity":0.5}}"#)
                .unwrap();
        let err =
            build_spec(&args(&["in.mp4", "--spec", "j.json"]), Some(file.clone())).unwrap_err();
        assert!(err.0.contains("--watermark IMAGE"), "{err}");
        let a = args(&[
            "in.mp4",
            "--spec",
            "j.json",
            "--watermark",
            "m.png",
            "--watermark-scale",
            "0.3",
        ]);
        let (spec, _) = build_spec(&a, Some(file)).unwrap();
        assert_eq!(
            spec.watermark,
            Some(serde_json::json!({"opacity": 0.5, "scale": 0.3}))
        );
    }

    #[test]
    fn a_missing_side_file_is_an_error_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let srt = dir.path().join("en.srt");
        std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:01,000\nhi\n").unwrap();
        let ok = args(&[
            "in.mp4",
            "--preset",
            "p",
            "--caption",
            srt.to_str().unwrap(),
        ]);
        let sides = SideFiles::read(&ok).unwrap();
        assert_eq!(sides.captions.len(), 1);
        assert_eq!(sides.captions[0].name, "captions");
        assert_eq!(sides.captions[0].file_name, "en.srt");
        let missing = dir.path().join("nope.png");
        let a = args(&[
            "in.mp4",
            "--preset",
            "p",
            "--watermark",
            missing.to_str().unwrap(),
        ]);
        let err = SideFiles::read(&a).unwrap_err().to_string();
        assert!(
            err.contains("watermark image") && err.contains("nope.png"),
            "{err}"
        );
        let a = args(&[
            "in.mp4",
            "--preset",
            "p",
            "--caption",
            dir.path().to_str().unwrap(),
        ]);
        let err = SideFiles::read(&a).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(args(&["a.mp4", "--preset", "p"]).resumable_above, 64 << 20);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert!(
            Harness::try_parse_from(["submit", "in.mp4", "--output", "{\"bogus\":1}"]).is_err()
        );
        assert!(Harness::try_parse_from(["submit", "in.mp4", "--key", "k"]).is_err());
        assert!(Harness::try_parse_from(["submit", "--preset", "p"]).is_err());
        assert!(Harness::try_parse_from(["submit", "in.mp4", "--timeout", "5"]).is_err());
        assert!(Harness::try_parse_from(["submit", "in.mp4", "--idempotency-key", "a b"]).is_err());
        let err = build_spec(&args(&["in.mp4"]), None).unwrap_err();
        assert!(err.0.contains("at least one output"), "{err}");
        assert!(build_spec(&args(&[""]), None).is_err());
    }

    #[test]
    fn spec_file_supplies_outputs_priority_and_default_input() {
        let file: JobSpec = serde_json::from_str(
            r#"{"input":{"url":"https://x/y.mp4"},"outputs":[{"preset":"a"}],"priority":5}"#,
        )
        .unwrap();
        // The file's input is used when nothing replaces it.
        let a = args(&["--spec", "job.json", "--preset", "b"]);
        let (spec, source) = build_spec(&a, Some(file.clone())).unwrap();
        assert_eq!(source, Source::Inline);
        assert_eq!(spec.input, file.input);
        assert_eq!(
            spec.outputs,
            vec![OutputSpec::preset("a"), OutputSpec::preset("b")]
        );
        assert_eq!(spec.priority, 5);
        // INPUT replaces it; --priority overrides.
        let a = args(&["local.mp4", "--spec", "job.json", "--priority", "1"]);
        let (spec, source) = build_spec(&a, Some(file)).unwrap();
        assert_eq!(source, Source::Upload("local.mp4".into()));
        assert_eq!(spec.input, None);
        assert_eq!(spec.priority, 1);
        // A spec file without input and no INPUT is a usage error.
        let bare: JobSpec = serde_json::from_str(r#"{"outputs":[{"preset":"a"}]}"#).unwrap();
        let err = build_spec(&args(&["--spec", "job.json"]), Some(bare)).unwrap_err();
        assert!(err.0.contains("no input"), "{err}");
    }
}
