//! Captions: the input's text subtitle streams and the caption files a job carries become WebVTT
//! sidecars, and subtitle renditions of the HLS master playlist and the DASH MPD.
//!
//! A caption file is user bytes like any input: it is size-bounded, must be UTF-8 text in one of
//! three formats recognised from its content (never from a name), and is converted by ffmpeg
//! with that format's demuxer forced and nothing else allowed, so it can never be read as a
//! playlist or a URL. Names and languages that end up inside manifests are reduced to a safe
//! alphabet first: a quote in a track title must not be able to add attributes to a playlist.

use crate::analysis::{self, AnalysisError, Input};
use crate::policy::InputPolicy;
use crate::probe::{MediaInfo, StreamKind};
use crate::sandbox::Tools;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Subtitle codecs that are text (bitmap subtitles such as PGS or DVB need OCR and are skipped).
pub const TEXT_CODECS: &[&str] = &["subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"];
/// Largest caption file a job may carry, bytes.
pub const MAX_CAPTION_BYTES: u64 = 2 << 20;

/// Largest WebVTT a subtitle stream of the input may become. A film's subtitles are a few
/// hundred KB; a crafted track of millions of one-letter cues would otherwise be converted
/// without bound and read whole into the worker (and copied into every HLS/DASH output).
pub const MAX_TRACK_WEBVTT_BYTES: u64 = 16 << 20;
/// At most this many caption tracks per job (streams and files together).
pub const MAX_TRACKS: usize = 16;

/// Where a caption track comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum CaptionSource {
    /// Stream `index` of the input.
    Stream { index: u32 },
    /// The job's caption part number `index` (0-based, in upload order).
    Part { index: usize },
}

/// One caption track of a job's outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionTrack {
    pub source: CaptionSource,
    /// Cleaned language tag (`en`, `pt-BR`), `None` when unknown.
    pub language: Option<String>,
    /// Cleaned display name.
    pub name: String,
    /// File name of the WebVTT sidecar, relative to the output (`captions/0-en.vtt`).
    pub file: String,
}

/// Why a caption file or stream was refused or could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum CaptionError {
    #[error("caption file is larger than {MAX_CAPTION_BYTES} bytes")]
    TooLarge,
    #[error("caption track is larger than {MAX_TRACK_WEBVTT_BYTES} bytes as WebVTT")]
    TrackTooLarge,
    #[error("caption file is not UTF-8 text")]
    NotText,
    #[error("caption file is not SRT, WebVTT or ASS")]
    UnknownFormat,
    #[error("caption track has no cues")]
    NoCues,
    #[error("at most {MAX_TRACKS} caption tracks per job")]
    TooMany,
    #[error("captions.burn_in: no caption track in language {0:?} (the input's subtitle streams and the job's caption files)")]
    NoSuchTrack(String),
    #[error(transparent)]
    Convert(#[from] AnalysisError),
}

impl CaptionError {
    pub fn code(&self) -> &'static str {
        match self {
            CaptionError::TooLarge | CaptionError::TrackTooLarge => "caption_too_large",
            CaptionError::NotText | CaptionError::UnknownFormat => "caption_unsupported",
            CaptionError::NoCues => "caption_empty",
            CaptionError::TooMany => "too_many_captions",
            CaptionError::NoSuchTrack(_) => "caption_not_found",
            CaptionError::Convert(e) if e.is_transient() => e.code(),
            CaptionError::Convert(_) => "caption_unreadable",
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, CaptionError::Convert(e) if e.is_transient())
    }
}

/// Whether `track` is the one a `burn_in` language names (its language, ASCII case ignored).
pub fn is_burn_in(track: &CaptionTrack, language: &str) -> bool {
    track
        .language
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case(language.trim()))
}

/// A language tag as it may appear in a manifest: letters, digits and `-`, starting with 2-3
/// letters; `und` (undetermined) and anything else become `None`.
pub fn clean_language(tag: &str) -> Option<String> {
    let tag = tag.trim();
    let mut parts = tag.split('-');
    let primary = parts.next()?;
    let ok_primary =
        (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
    let ok_rest =
        parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    (ok_primary && ok_rest && tag.len() <= 35 && !primary.eq_ignore_ascii_case("und"))
        .then(|| tag.to_string())
}

/// A display name safe inside a quoted playlist attribute and XML: printable characters except
/// `"`, `,`, `<`, `>`, `&` and `\`, at most 64 characters; `fallback` when nothing is left.
pub fn clean_name(name: &str, fallback: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | ',' | '<' | '>' | '&' | '\\'))
        .take(64)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        fallback.to_string()
    } else {
        cleaned.to_string()
    }
}

fn track(
    n: usize,
    source: CaptionSource,
    language: Option<String>,
    title: Option<&str>,
) -> CaptionTrack {
    let fallback = language
        .clone()
        .unwrap_or_else(|| format!("Captions {}", n + 1));
    let name = clean_name(title.unwrap_or(""), &fallback);
    let file = match &language {
        Some(l) => format!("captions/{n}-{l}.vtt"),
        None => format!("captions/{n}.vtt"),
    };
    CaptionTrack {
        source,
        language,
        name,
        file,
    }
}

/// The input's text subtitle streams, in stream order, as caption tracks numbered from 0.
pub fn tracks_from_probe(info: &MediaInfo) -> Vec<CaptionTrack> {
    info.streams
        .iter()
        .filter(|s| s.kind == StreamKind::Subtitle && TEXT_CODECS.contains(&s.codec.as_str()))
        .take(MAX_TRACKS)
        .enumerate()
        .map(|(n, s)| {
            track(
                n,
                CaptionSource::Stream { index: s.index },
                s.language.as_deref().and_then(clean_language),
                s.title.as_deref(),
            )
        })
        .collect()
}

/// A caption part of the job, numbered after `first` (the count of stream tracks before it).
pub fn part_track(
    first: usize,
    part: usize,
    language: Option<&str>,
    name: Option<&str>,
) -> CaptionTrack {
    track(
        first + part,
        CaptionSource::Part { index: part },
        language.and_then(clean_language),
        name,
    )
}

/// Recognises a caption file by its content: the demuxer that must read it.
pub fn sniff_format(bytes: &[u8]) -> Result<&'static str, CaptionError> {
    if bytes.len() as u64 > MAX_CAPTION_BYTES {
        return Err(CaptionError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CaptionError::NotText)?;
    let text = text.trim_start_matches('\u{feff}');
    if text.contains('\0') {
        return Err(CaptionError::NotText);
    }
    let head = text.trim_start();
    if head.starts_with("WEBVTT") {
        return Ok("webvtt");
    }
    if head.starts_with("[Script Info]") {
        return Ok("ass");
    }
    // SRT: a cue number, then a `hh:mm:ss,mmm --> hh:mm:ss,mmm` line.
    let mut lines = head.lines().map(str::trim);
    let numbered = lines.next().is_some_and(|l| l.parse::<u64>().is_ok());
    let timed = lines
        .next()
        .is_some_and(|l| l.contains("-->") && l.contains(':'));
    if numbered && timed {
        return Ok("srt");
    }
    Err(CaptionError::UnknownFormat)
}

/// Cues in a WebVTT document.
pub fn cue_count(vtt: &str) -> usize {
    vtt.lines().filter(|l| l.contains("-->")).count()
}

/// Converts subtitle stream `stream` of `input` (or the whole input, a caption file, when
/// `None`) to WebVTT at `out`, and checks it has cues.
pub async fn to_webvtt(
    tools: &Tools,
    policy: &InputPolicy,
    input: Input<'_>,
    stream: Option<u32>,
    out: &Path,
    timeout: Duration,
) -> Result<usize, CaptionError> {
    let map = match stream {
        Some(i) => format!("0:{i}"),
        None => "0:s:0".to_string(),
    };
    // `-fs` stops ffmpeg one byte past the cap, so the size tells whether it was reached.
    let args = [
        "-map".to_string(),
        map,
        "-c:s".to_string(),
        "webvtt".to_string(),
        "-fs".to_string(),
        (MAX_TRACK_WEBVTT_BYTES + 1).to_string(),
    ];
    analysis::convert(tools, policy, &[input], &args, "webvtt", out, timeout).await?;
    let size = std::fs::metadata(out)
        .map_err(|_| CaptionError::NotText)?
        .len();
    if size > MAX_TRACK_WEBVTT_BYTES {
        let _ = std::fs::remove_file(out);
        return Err(CaptionError::TrackTooLarge);
    }
    let text = std::fs::read_to_string(out).map_err(|_| CaptionError::NotText)?;
    match cue_count(&text) {
        0 => Err(CaptionError::NoCues),
        n => Ok(n),
    }
}

/// The file name (in the encode's working directory) of the ASS script a burn-in reads.
pub const BURN_IN_FILE: &str = "burn-in.ass";

/// Converts a WebVTT sidecar reelay wrote to the ASS script the `ass` filter burns into the
/// picture. libass reads that script itself (no demuxer, no protocol), and it is ffmpeg's own
/// ASS output, so the only user bytes in it are cue texts.
pub async fn to_ass(
    tools: &Tools,
    policy: &InputPolicy,
    vtt: &Path,
    out: &Path,
    timeout: Duration,
) -> Result<(), CaptionError> {
    let input = Input {
        path: vtt,
        demuxer: "webvtt",
    };
    let args = [
        "-map".to_string(),
        "0:s:0".to_string(),
        "-c:s".to_string(),
        "ass".to_string(),
    ];
    analysis::convert(tools, policy, &[input], &args, "ass", out, timeout).await?;
    Ok(())
}

/// The first video timestamp of an MPEG-TS segment reelay wrote, in 90 kHz units: what the
/// sidecars' `X-TIMESTAMP-MAP` must name (the TS muxer starts its clock at an offset, not at
/// zero). The video's, not the segment's: the AAC encoder's priming starts the audio ~20 ms
/// earlier, and a cue at 0.2 s means 0.2 s after the first picture.
pub async fn ts_start_90k(tools: &Tools, segment: &Path) -> Result<u64, AnalysisError> {
    let mut cmd = tokio::process::Command::new(&tools.ffprobe);
    cmd.args(["-v", "error", "-protocol_whitelist", "file"])
        .args(["-format_whitelist", "mpegts", "-f", "mpegts"])
        .args([
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=start_time",
        ])
        .args(["-of", "csv=p=0", "-i"])
        .arg(crate::file_url(segment))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    tools.limits.apply(&mut cmd);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.spawn()?.wait_with_output())
        .await
        .map_err(|_| AnalysisError::TimedOut)??;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(AnalysisError::Failed(
            err.trim().chars().take(200).collect(),
        ));
    }
    // ffprobe prints the stream once per program it is in, and once on its own.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| (t * 90_000.0).round() as u64)
        .ok_or(AnalysisError::NoResult("start time"))
}

/// Adds the `X-TIMESTAMP-MAP` header HLS players need to place WebVTT cues on MPEG-TS media whose
/// timestamps start at `mpegts` (90 kHz units), not at zero.
pub fn with_timestamp_map(vtt: &str, mpegts: u64) -> String {
    let body = vtt.trim_start_matches('\u{feff}');
    let (first, rest) = body.split_once('\n').unwrap_or((body, ""));
    format!(
        "{}\nX-TIMESTAMP-MAP=MPEGTS:{mpegts},LOCAL:00:00:00.000\n{rest}",
        first.trim_end()
    )
}

/// A subtitle media playlist holding the whole sidecar as one segment.
pub fn media_playlist(vtt_uri: &str, duration: f64) -> String {
    let target = duration.ceil().max(1.0) as u64;
    format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{duration:.3},\n{vtt_uri}\n#EXT-X-ENDLIST\n"
    )
}

/// The master playlist with a `SUBTITLES` group holding `tracks` (each with the URI of its media
/// playlist) and every variant pointing at it. The first track is the default.
pub fn add_to_master(master: &str, tracks: &[(&CaptionTrack, String)]) -> String {
    if tracks.is_empty() {
        return master.to_string();
    }
    let mut out = String::with_capacity(master.len() + 200 * tracks.len());
    let mut media_written = false;
    for line in master.lines() {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            if !media_written {
                for (i, (t, uri)) in tracks.iter().enumerate() {
                    out.push_str(&format!(
                        "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"{}\",{}DEFAULT={},AUTOSELECT=YES,URI=\"{}\"\n",
                        t.name,
                        t.language
                            .as_ref()
                            .map(|l| format!("LANGUAGE=\"{l}\","))
                            .unwrap_or_default(),
                        if i == 0 { "YES" } else { "NO" },
                        uri
                    ));
                }
                media_written = true;
            }
            out.push_str(line);
            if !line.contains("SUBTITLES=") {
                out.push_str(",SUBTITLES=\"subs\"");
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The MPD with one text adaptation set per track (sidecar WebVTT by `BaseURL`), in the first
/// period.
pub fn add_to_mpd(mpd: &str, tracks: &[(&CaptionTrack, String)]) -> String {
    let Some(at) = mpd.find("</Period>") else {
        return mpd.to_string();
    };
    let mut sets = String::new();
    for (i, (t, uri)) in tracks.iter().enumerate() {
        let lang = t
            .language
            .as_ref()
            .map(|l| format!(" lang=\"{l}\""))
            .unwrap_or_default();
        sets.push_str(&format!(
            "  <AdaptationSet id=\"{id}\" contentType=\"text\" mimeType=\"text/vtt\"{lang}>\n\
             \x20   <Role schemeIdUri=\"urn:mpeg:dash:role:2011\" value=\"subtitle\"/>\n\
             \x20   <Label>{name}</Label>\n\
             \x20   <Representation id=\"caption{i}\" bandwidth=\"256\">\n\
             \x20     <BaseURL>{uri}</BaseURL>\n\
             \x20   </Representation>\n\
             \x20 </AdaptationSet>\n",
            id = 1000 + i,
            name = t.name,
        ));
    }
    format!("{}{}{}", &mpd[..at], sets, &mpd[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_names_are_made_safe() {
        assert_eq!(clean_language("en"), Some("en".into()));
        assert_eq!(clean_language("pt-BR"), Some("pt-BR".into()));
        assert_eq!(clean_language("und"), None);
        assert_eq!(clean_language("e\"n"), None);
        assert_eq!(clean_language("english,x"), None);
        assert_eq!(clean_name("English \"SDH\", <b>", "x"), "English SDH b");
        assert_eq!(clean_name("\n\t", "Captions 1"), "Captions 1");
        assert_eq!(clean_name(&"a".repeat(200), "x").len(), 64);
    }

    #[test]
    fn formats_are_recognised_by_content() {
        assert_eq!(
            sniff_format(b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n").unwrap(),
            "webvtt"
        );
        assert_eq!(
            sniff_format("\u{feff}1\n00:00:00,000 --> 00:00:01,000\nhi\n".as_bytes()).unwrap(),
            "srt"
        );
        assert_eq!(sniff_format(b"[Script Info]\nTitle: x\n").unwrap(), "ass");
        assert!(matches!(
            sniff_format(b"#EXTM3U\nhttp://x/\n"),
            Err(CaptionError::UnknownFormat)
        ));
        assert!(matches!(
            sniff_format(&[0xff, 0xfe, 0x00]),
            Err(CaptionError::NotText)
        ));
        assert!(matches!(
            sniff_format(b"WEBVTT\0"),
            Err(CaptionError::NotText)
        ));
        let big = vec![b'a'; MAX_CAPTION_BYTES as usize + 1];
        assert!(matches!(sniff_format(&big), Err(CaptionError::TooLarge)));
        assert_eq!(CaptionError::UnknownFormat.code(), "caption_unsupported");
        assert!(!CaptionError::NoCues.is_transient());
    }

    #[test]
    fn master_gains_a_subtitle_group_and_every_variant_points_at_it() {
        let master = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=1000,RESOLUTION=640x360\n360/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=3000,RESOLUTION=1280x720\n720/index.m3u8\n";
        let en = part_track(0, 0, Some("en"), Some("English"));
        let fr = part_track(0, 1, Some("fr"), None);
        let out = add_to_master(
            master,
            &[
                (&en, "captions/0-en.m3u8".into()),
                (&fr, "captions/1-fr.m3u8".into()),
            ],
        );
        assert_eq!(out.matches("#EXT-X-MEDIA:TYPE=SUBTITLES").count(), 2);
        assert!(out.contains("NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES"));
        assert!(out.contains("NAME=\"fr\",LANGUAGE=\"fr\",DEFAULT=NO"));
        assert_eq!(out.matches(",SUBTITLES=\"subs\"").count(), 2);
        // Media lines come before the first variant.
        assert!(out.find("TYPE=SUBTITLES").unwrap() < out.find("#EXT-X-STREAM-INF").unwrap());
        assert_eq!(add_to_master(master, &[]), master);
    }

    #[test]
    fn mpd_and_playlists() {
        let mpd = "<MPD><Period id=\"0\"><AdaptationSet id=\"0\"/></Period></MPD>";
        let t = part_track(2, 0, Some("de"), Some("Deutsch"));
        assert_eq!(t.file, "captions/2-de.vtt");
        let out = add_to_mpd(mpd, &[(&t, t.file.clone())]);
        assert!(out.contains("mimeType=\"text/vtt\" lang=\"de\""));
        assert!(out.contains("<BaseURL>captions/2-de.vtt</BaseURL>"));
        assert!(out.ends_with("</AdaptationSet>\n</Period></MPD>"));
        let pl = media_playlist("0-en.vtt", 12.4);
        assert!(pl.contains("#EXT-X-TARGETDURATION:13\n") && pl.ends_with("#EXT-X-ENDLIST\n"));
        let v = with_timestamp_map("WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n", 126000);
        assert!(
            v.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n00:00.000")
        );
        assert_eq!(cue_count(&v), 1);
    }
}
