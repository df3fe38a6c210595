//! The steps around an ffmpeg run that a packaging needs: its directory before (ffmpeg's DASH
//! muxer does not create one), and after it, the manifests' codecs strings made complete from
//! the init segments (this ffmpeg writes a bare `hvc1` into MPDs and CMAF master playlists and
//! no `CODECS` at all for AV1 in HLS). The text rewrites are pure functions; only
//! [`prepare`]/[`finish`] touch files.

use crate::codecs;
use crate::manifest::{hls_uris, mpd_representations, with_exact_duration, ManifestError};
use crate::plan::{Packaging, Rendition, Segments, DASH_MANIFEST, HLS_MASTER};
use crate::probe::MediaInfo;
use crate::storyboard;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Manifest(String, ManifestError),
    #[error("{manifest} names {file}, which ffmpeg did not write")]
    Missing { manifest: String, file: String },
}

impl PackageError {
    /// A scratch-disk failure may pass on another worker; a broken manifest will not.
    pub fn is_transient(&self) -> bool {
        matches!(self, PackageError::Io(..))
    }
    pub fn code(&self) -> &'static str {
        match self {
            PackageError::Io(..) => "scratch_error",
            PackageError::Manifest(..) | PackageError::Missing { .. } => "transcode_failed",
        }
    }
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |e| PackageError::Io(what.display().to_string(), e)
}

/// Creates what ffmpeg expects to exist before it writes this rendition.
pub fn prepare(r: &Rendition, out_dir: &Path) -> Result<(), PackageError> {
    if !matches!(r.packaging, Packaging::File(_)) {
        let dir = out_dir.join(&r.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    Ok(())
}

/// Completes the manifests of a finished ladder output, then checks that every file they name
/// exists: a manifest pointing at a missing segment would publish an output that stalls.
/// A storyboard gets its WebVTT track here, over the sheets ffmpeg wrote.
pub fn finish(r: &Rendition, info: &MediaInfo, out_dir: &Path) -> Result<(), PackageError> {
    complete_codecs(r, out_dir)?;
    let dir = out_dir.join(&r.name);
    match &r.packaging {
        Packaging::File(_) => {}
        Packaging::Storyboard(sb) => {
            let sheets = (1..)
                .take_while(|n| dir.join(storyboard::sheet_name(*n)).is_file())
                .count() as u32;
            if sheets == 0 {
                return Err(missing(
                    &dir.join(storyboard::TRACK),
                    &storyboard::sheet_name(1),
                ));
            }
            let tile = crate::argv::tile_dims(info, sb);
            let cues = storyboard::cues(sb, crate::argv::output_seconds(r, info), tile, sheets);
            let path = dir.join(storyboard::TRACK);
            std::fs::write(&path, storyboard::vtt(&cues)).map_err(io(&path))?;
        }
        Packaging::Hls { .. } => check_hls(&dir, HLS_MASTER)?,
        Packaging::Dash(_) => check_mpd(&dir)?,
        Packaging::Cmaf(_) => {
            check_mpd(&dir)?;
            check_hls(&dir, HLS_MASTER)?;
        }
    }
    Ok(())
}

/// A caption track of the job and its WebVTT file in the working directory.
pub type CaptionFile = (crate::captions::CaptionTrack, std::path::PathBuf);

/// Puts the job's caption tracks into a finished ladder output: each WebVTT sidecar copied
/// beside the manifests (`<name>/captions/…`, so the manifests name plain relative paths); for
/// HLS a one-segment subtitle playlist per track and a `SUBTITLES` group in the master
/// playlist, for DASH a text adaptation set per track. `ts_start` is the first timestamp of
/// MPEG-TS segments (90 kHz), which an HLS sidecar's `X-TIMESTAMP-MAP` must name so players
/// place its cues on the TS clock; fMP4 media starts at zero and needs no map. Files and
/// storyboards are left alone (the sidecars sit at the job's top level for them).
pub fn add_captions(
    r: &Rendition,
    out_dir: &Path,
    tracks: &[CaptionFile],
    ts_start: Option<u64>,
    duration: f64,
) -> Result<(), PackageError> {
    let (hls, dash) = match &r.packaging {
        Packaging::Hls { .. } => (true, false),
        Packaging::Dash(_) => (false, true),
        Packaging::Cmaf(_) => (true, true),
        Packaging::File(_) | Packaging::Storyboard(_) => return Ok(()),
    };
    if tracks.is_empty() {
        return Ok(());
    }
    let dir = out_dir.join(&r.name);
    let mut playlists = Vec::with_capacity(tracks.len());
    for (track, vtt) in tracks {
        let dest = dir.join(&track.file);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let text = read(vtt)?;
        let text = match ts_start.filter(|_| hls) {
            Some(start) => crate::captions::with_timestamp_map(&text, start),
            None => text,
        };
        std::fs::write(&dest, text).map_err(io(&dest))?;
        let playlist = track.file.replace(".vtt", ".m3u8");
        if hls {
            let name = dest
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let path = dir.join(&playlist);
            std::fs::write(&path, crate::captions::media_playlist(&name, duration))
                .map_err(io(&path))?;
        }
        playlists.push((track, playlist));
    }
    if hls {
        let path = dir.join(HLS_MASTER);
        let master = crate::captions::add_to_master(&read(&path)?, &playlists);
        std::fs::write(&path, master).map_err(io(&path))?;
    }
    if dash {
        let path = dir.join(DASH_MANIFEST);
        let sidecars: Vec<_> = tracks.iter().map(|(t, _)| (t, t.file.clone())).collect();
        let mpd = crate::captions::add_to_mpd(&read(&path)?, &sidecars);
        std::fs::write(&path, mpd).map_err(io(&path))?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, PackageError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn missing(manifest: &Path, file: &str) -> PackageError {
    PackageError::Missing {
        manifest: manifest
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into()),
        file: file.to_string(),
    }
}

/// Every file a manifest names must be a plain relative path that exists (no `..`, no URL).
fn exists(base: &Path, manifest: &Path, file: &str) -> Result<(), PackageError> {
    let plain = !file.contains("://")
        && !file.starts_with('/')
        && file.split('/').all(|p| !p.is_empty() && p != "..");
    if plain && base.join(file).is_file() {
        Ok(())
    } else {
        Err(missing(manifest, file))
    }
}

/// Checks that the MPD names only files that exist, and writes its exact duration
/// ([`with_exact_duration`]).
fn check_mpd(dir: &Path) -> Result<(), PackageError> {
    let path = dir.join(DASH_MANIFEST);
    let text = read(&path)?;
    let reps =
        mpd_representations(&text).map_err(|e| PackageError::Manifest(DASH_MANIFEST.into(), e))?;
    if let Some(exact) = with_exact_duration(&text) {
        std::fs::write(&path, exact).map_err(io(&path))?;
    }
    for rep in &reps {
        for f in std::iter::once(&rep.init).chain(&rep.media) {
            exists(dir, &path, f)?;
        }
    }
    Ok(())
}

/// The master playlist, each playlist it names, and each file those name.
fn check_hls(dir: &Path, master: &str) -> Result<(), PackageError> {
    let path = dir.join(master);
    for playlist in hls_uris(&read(&path)?) {
        exists(dir, &path, &playlist)?;
        let media_path = dir.join(&playlist);
        let base = media_path.parent().unwrap_or(dir);
        for f in hls_uris(&read(&media_path)?) {
            exists(base, &media_path, &f)?;
        }
    }
    Ok(())
}

fn complete_codecs(r: &Rendition, out_dir: &Path) -> Result<(), PackageError> {
    let dir = out_dir.join(&r.name);
    let init_codecs = |name: &str| -> Vec<String> {
        std::fs::read(dir.join(name))
            .map(|b| codecs::from_init_segment(&b))
            .unwrap_or_default()
    };
    let rewrite = |file: &str, f: &dyn Fn(&str) -> String| -> Result<(), PackageError> {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let fixed = f(&text);
        if fixed != text {
            std::fs::write(&path, fixed).map_err(io(&path))?;
        }
        Ok(())
    };
    match &r.packaging {
        Packaging::File(_)
        | Packaging::Storyboard(_)
        | Packaging::Hls {
            segments: Segments::Ts,
            ..
        } => Ok(()),
        Packaging::Hls {
            segments: Segments::Fmp4,
            ..
        } => rewrite(HLS_MASTER, &|t| {
            fix_hls_master(t, &|uri| {
                // v3/index.m3u8 → v3/init_3.mp4, holding the variant's video and audio.
                let v = uri.split('/').next().unwrap_or("");
                init_codecs(&format!("{v}/init_{}.mp4", v.trim_start_matches('v')))
            })
        }),
        Packaging::Dash(_) | Packaging::Cmaf(_) => {
            let rep = |id: &str| init_codecs(&format!("init-{id}.m4s"));
            rewrite(DASH_MANIFEST, &|t| fix_mpd(t, &rep))?;
            if matches!(r.packaging, Packaging::Cmaf(_)) {
                // The DASH muxer's HLS media playlists: made VOD playlists (see `vod_playlist`).
                let master = read(&dir.join(HLS_MASTER))?;
                for playlist in hls_uris(&master) {
                    if playlist.ends_with(".m3u8") && !playlist.contains('/') {
                        rewrite(&playlist, &vod_playlist)?;
                    }
                }
                // media_3.m3u8 is representation 3; the audio group's codec stays as written.
                rewrite(HLS_MASTER, &|t| {
                    fix_hls_master(t, &|uri| {
                        let id = uri.trim_start_matches("media_").trim_end_matches(".m3u8");
                        rep(id)
                    })
                })?;
            }
            Ok(())
        }
    }
}

/// Makes a finished media playlist of ffmpeg's DASH muxer a VOD playlist like the HLS muxer's:
/// `#EXT-X-PLAYLIST-TYPE:VOD` (players may then cache and seek it whole) and
/// `#EXT-X-INDEPENDENT-SEGMENTS` (every segment starts at a keyframe), and without the wall-clock
/// `#EXT-X-PROGRAM-DATE-TIME` it stamps on each segment (the time of the encode, not of the
/// content, which would mislead a player's date display).
pub fn vod_playlist(text: &str) -> String {
    let mut out = vec![];
    let has = |tag: &str| text.lines().any(|l| l.starts_with(tag));
    for line in text.lines() {
        if line.starts_with("#EXT-X-PROGRAM-DATE-TIME") {
            continue;
        }
        out.push(line.to_string());
        if line.starts_with("#EXT-X-TARGETDURATION") {
            if !has("#EXT-X-PLAYLIST-TYPE") {
                out.push("#EXT-X-PLAYLIST-TYPE:VOD".into());
            }
            if !has("#EXT-X-INDEPENDENT-SEGMENTS") {
                out.push("#EXT-X-INDEPENDENT-SEGMENTS".into());
            }
        }
    }
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A codecs string ffmpeg left incomplete: a bare four-character code, no profile or level.
fn is_bare(codec: &str) -> bool {
    !codec.contains('.') && codec != "opus" && codec != "flac"
}

/// Sets each `#EXT-X-STREAM-INF`'s `CODECS`: bare entries are replaced by the derived strings of
/// the same family, and a missing attribute is added from everything the variant's init segment
/// holds. `derive` maps the variant's URI to the codecs strings of its init segment.
pub fn fix_hls_master(text: &str, derive: &dyn Fn(&str) -> Vec<String>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") else {
            out.push(line.to_string());
            continue;
        };
        let uri = lines[i + 1..]
            .iter()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.trim())
            .unwrap_or("");
        let derived = derive(uri);
        let fixed = match attr_value(attrs, "CODECS=\"") {
            Some(old) => {
                let new = complete(old, &derived);
                line.replacen(
                    &format!("CODECS=\"{old}\""),
                    &format!("CODECS=\"{new}\""),
                    1,
                )
            }
            None if !derived.is_empty() => format!("{line},CODECS=\"{}\"", derived.join(",")),
            None => line.to_string(),
        };
        out.push(fixed);
    }
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Sets each `<Representation>`'s bare `codecs` to the string derived from its init segment.
pub fn fix_mpd(text: &str, derive: &dyn Fn(&str) -> Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("<Representation ") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('>').map_or(rest.len(), |e| at + e);
        let tag = &rest[at..end];
        let fixed = match (attr_value(tag, "id=\""), attr_value(tag, "codecs=\"")) {
            (Some(id), Some(old)) if old.split(',').any(is_bare) => {
                let new = complete(old, &derive(id));
                tag.replacen(
                    &format!("codecs=\"{old}\""),
                    &format!("codecs=\"{new}\""),
                    1,
                )
            }
            _ => tag.to_string(),
        };
        out.push_str(&fixed);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The value after `key` (which ends in `"`) up to the closing quote.
fn attr_value<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let start = s.find(key)? + key.len();
    let len = s[start..].find('"')?;
    Some(&s[start..start + len])
}

/// Replaces each bare entry of a codecs list with the derived string of the same family.
fn complete(list: &str, derived: &[String]) -> String {
    list.split(',')
        .map(|c| {
            if !is_bare(c) {
                return c.to_string();
            }
            derived
                .iter()
                .find(|d| d.split('.').next() == Some(c))
                .cloned()
                .unwrap_or_else(|| c.to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hevc(_: &str) -> Vec<String> {
        vec!["hvc1.1.6.L93.90".into()]
    }

    #[test]
    fn bare_hevc_in_the_mpd_gets_profile_and_level() {
        let mpd = r#"<AdaptationSet id="0">
  <Representation id="0" mimeType="video/mp4" codecs="hvc1" bandwidth="1">
  <Representation id="1" mimeType="video/mp4" codecs="avc1.64001e" bandwidth="1">
  <Representation id="2" mimeType="audio/mp4" codecs="mp4a.40.2" bandwidth="1">
</AdaptationSet>"#;
        let out = fix_mpd(mpd, &hevc);
        assert!(
            out.contains(r#"id="0" mimeType="video/mp4" codecs="hvc1.1.6.L93.90""#),
            "{out}"
        );
        assert!(out.contains(r#"codecs="avc1.64001e""#) && out.contains(r#"codecs="mp4a.40.2""#));
        assert_eq!(out.len(), mpd.len() + ".1.6.L93.90".len());
    }

    #[test]
    fn hls_master_gets_complete_or_missing_codecs() {
        let master = "#EXTM3U\n#EXT-X-VERSION:7\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640x360,CODECS=\"hvc1,mp4a.40.2\",AUDIO=\"a\"\n\
            media_0.m3u8\n\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=426x240\n\
            v1/index.m3u8\n";
        let out = fix_hls_master(master, &|uri| {
            if uri == "media_0.m3u8" {
                vec!["hvc1.1.6.L93.90".into()]
            } else {
                assert_eq!(uri, "v1/index.m3u8");
                vec!["av01.0.04M.08".into(), "mp4a.40.2".into()]
            }
        });
        assert!(
            out.contains("CODECS=\"hvc1.1.6.L93.90,mp4a.40.2\",AUDIO=\"a\"\n"),
            "{out}"
        );
        assert!(
            out.contains("RESOLUTION=426x240,CODECS=\"av01.0.04M.08,mp4a.40.2\"\n"),
            "{out}"
        );
        assert!(out.ends_with("v1/index.m3u8\n"));
    }

    #[test]
    fn dash_muxer_media_playlists_become_vod_playlists() {
        let media = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:1\n\
            #EXT-X-MAP:URI=\"init-0.m4s\"\n#EXTINF:4.000000,\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-11-30T11:25:39.000+0000\nseg-0-00001.m4s\n#EXT-X-ENDLIST\n";
        let vod = vod_playlist(media);
        assert_eq!(
            vod,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-MAP:URI=\"init-0.m4s\"\n\
             #EXTINF:4.000000,\nseg-0-00001.m4s\n#EXT-X-ENDLIST\n"
        );
        assert_eq!(vod_playlist(&vod), vod, "applied twice, nothing changes");
    }

    #[test]
    fn complete_manifests_are_left_alone() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001e,mp4a.40.2\"\nv0/index.m3u8\n";
        assert_eq!(
            fix_hls_master(master, &|_| vec!["avc1.640028".into()]),
            master
        );
        let mpd = r#"<Representation id="0" codecs="av01.0.01M.08">"#;
        assert_eq!(fix_mpd(mpd, &hevc), mpd);
    }
}
