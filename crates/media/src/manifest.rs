//! Reading the manifests reelay writes: the DASH MPD's representations with every segment file
//! they name, and the URIs an HLS playlist references. [`crate::package::finish`] uses them to
//! refuse an output whose manifest names a file that is not there (a player would stall on it),
//! and tests use them to fetch every segment as a player would. Pure text in, names out; it
//! reads the subset of DASH that ffmpeg's muxer writes (`SegmentTemplate` with a
//! `SegmentTimeline` or a fixed `duration`) and says so when it meets anything else.

/// One `<Representation>` with the files a player fetches for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MpdRepresentation {
    pub id: String,
    pub mime_type: String,
    pub codecs: String,
    pub bandwidth: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Initialization segment, relative to the MPD.
    pub init: String,
    /// Media segments in play order, relative to the MPD.
    pub media: Vec<String>,
    /// Start of each media segment in `timescale` units (from the timeline).
    pub starts: Vec<u64>,
    /// Where the last media segment ends, in `timescale` units.
    pub end: u64,
    pub timescale: u64,
}

impl MpdRepresentation {
    /// Seconds of media the timeline covers.
    pub fn seconds(&self) -> f64 {
        self.end as f64 / self.timescale.max(1) as f64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the MPD has no representation")]
    NoRepresentation,
    #[error("representation {0:?} has no SegmentTemplate with a timeline")]
    NoTimeline(String),
    #[error("segment template {0:?} uses an identifier reelay does not write")]
    Template(String),
}

/// Attribute `name` of a tag's text (`<X a="1" b="2">`).
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_string())
}

/// Expands `$RepresentationID$`, `$Number$`/`$Number%05d$` and `$Time$`.
fn expand(template: &str, id: &str, number: u64, time: u64) -> Result<String, ManifestError> {
    let mut out = String::new();
    let mut parts = template.split('$');
    out.push_str(parts.next().unwrap_or(""));
    let mut inside = true;
    for p in parts {
        if !inside {
            out.push_str(p);
            inside = true;
            continue;
        }
        inside = false;
        let (ident, width) = match p.split_once('%') {
            Some((i, fmt)) => {
                let w = fmt
                    .strip_prefix('0')
                    .and_then(|f| f.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    .ok_or_else(|| ManifestError::Template(template.into()))?;
                (i, w)
            }
            None => (p, 0),
        };
        match ident {
            "" => out.push('$'),
            "RepresentationID" => out.push_str(id),
            "Number" => out.push_str(&format!("{number:0width$}")),
            "Time" => out.push_str(&format!("{time:0width$}")),
            _ => return Err(ManifestError::Template(template.into())),
        }
    }
    Ok(out)
}

/// Every representation of an MPD with its init and media segment names.
pub fn mpd_representations(text: &str) -> Result<Vec<MpdRepresentation>, ManifestError> {
    let mut reps = vec![];
    let mut cur: Option<MpdRepresentation> = None;
    let mut template: Option<(String, String, u64)> = None; // media, init, start number
    let mut timeline: Vec<(u64, u64)> = vec![]; // (start, duration) per segment
    let mut seg_duration: Option<u64> = None;
    let finish = |rep: &mut MpdRepresentation,
                  template: &Option<(String, String, u64)>,
                  timeline: &[(u64, u64)],
                  seg_duration: Option<u64>|
     -> Result<(), ManifestError> {
        let Some((media, init, start_number)) = template else {
            return Err(ManifestError::NoTimeline(rep.id.clone()));
        };
        if timeline.is_empty() && seg_duration.is_none() {
            return Err(ManifestError::NoTimeline(rep.id.clone()));
        }
        rep.init = expand(init, &rep.id, 0, 0)?;
        for (i, (t, d)) in timeline.iter().enumerate() {
            rep.media
                .push(expand(media, &rep.id, start_number + i as u64, *t)?);
            rep.starts.push(*t);
            rep.end = t + d;
        }
        Ok(())
    };
    for piece in text.split('<').skip(1) {
        let tag = piece.split('>').next().unwrap_or("");
        let name = tag.split_whitespace().next().unwrap_or("");
        match name {
            "Representation" => {
                cur = Some(MpdRepresentation {
                    id: attr(tag, "id").unwrap_or_default(),
                    mime_type: attr(tag, "mimeType").unwrap_or_default(),
                    codecs: attr(tag, "codecs").unwrap_or_default(),
                    bandwidth: attr(tag, "bandwidth")
                        .and_then(|b| b.parse().ok())
                        .unwrap_or(0),
                    width: attr(tag, "width").and_then(|w| w.parse().ok()),
                    height: attr(tag, "height").and_then(|h| h.parse().ok()),
                    timescale: 1,
                    ..Default::default()
                });
                template = None;
                timeline.clear();
                seg_duration = None;
            }
            "SegmentTemplate" => {
                if let Some(rep) = cur.as_mut() {
                    rep.timescale = attr(tag, "timescale")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(1);
                }
                seg_duration = attr(tag, "duration").and_then(|d| d.parse().ok());
                template = Some((
                    attr(tag, "media").unwrap_or_default(),
                    attr(tag, "initialization").unwrap_or_default(),
                    attr(tag, "startNumber")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                ));
            }
            "S" => {
                let next = timeline.last().map_or(0, |(t, d)| t + d);
                let t = attr(tag, "t").and_then(|t| t.parse().ok()).unwrap_or(next);
                let d: u64 = attr(tag, "d").and_then(|d| d.parse().ok()).unwrap_or(0);
                let r: u64 = attr(tag, "r").and_then(|r| r.parse().ok()).unwrap_or(0);
                for k in 0..=r.min(100_000) {
                    timeline.push((t + k * d, d));
                }
            }
            // A sidecar (caption WebVTT by BaseURL, see `captions::add_to_mpd`) is one whole
            // file, not segments: it is not a segmented representation.
            "BaseURL" if template.is_none() => {
                cur = None;
            }
            "/Representation" => {
                if let Some(mut rep) = cur.take() {
                    finish(&mut rep, &template, &timeline, seg_duration)?;
                    reps.push(rep);
                }
            }
            _ => {}
        }
    }
    if reps.is_empty() {
        return Err(ManifestError::NoRepresentation);
    }
    Ok(reps)
}

/// The MPD with `mediaPresentationDuration` set to the longest representation's timeline,
/// rounded up to the millisecond. ffmpeg's DASH muxer writes it to a tenth of a second
/// (`PT2.0S` for a clip whose audio runs 2.02 s): dash.js treats that as the end of the period,
/// and reaching it before the media ends made it seek back 0.5 s and pause instead of ending
/// (seen on a 2 s clip in real Chromium). `None` when the MPD has no such attribute or no
/// timeline to measure.
pub fn with_exact_duration(mpd: &str) -> Option<String> {
    let reps = mpd_representations(mpd).ok()?;
    let seconds = reps
        .iter()
        .map(MpdRepresentation::seconds)
        .fold(0.0, f64::max);
    if seconds <= 0.0 {
        return None;
    }
    let key = "mediaPresentationDuration=\"";
    let start = mpd.find(key)? + key.len();
    let len = mpd[start..].find('"')?;
    let millis = (seconds * 1000.0).ceil() as u64;
    Some(format!(
        "{}PT{}.{:03}S{}",
        &mpd[..start],
        millis / 1000,
        millis % 1000,
        &mpd[start + len..]
    ))
}

/// Every URI an HLS playlist references: variant and rendition playlists of a master
/// (`#EXT-X-MEDIA` `URI=`), segments and `#EXT-X-MAP` init segments of a media playlist.
pub fn hls_uris(text: &str) -> Vec<String> {
    let mut out = vec![];
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if line.starts_with("#EXT-X-MAP:") || line.starts_with("#EXT-X-MEDIA:") {
                if let Some(at) = line.find("URI=\"") {
                    let rest = &line[at + 5..];
                    out.push(rest[..rest.find('"').unwrap_or(rest.len())].to_string());
                }
            }
            continue;
        }
        out.push(line.to_string());
    }
    out
}

/// A name a manifest reelay wrote may give for one of its own files: relative, inside the
/// output's directory. Anything else is refused rather than read (a rung's files are opened
/// and concatenated for its quality receipt, and a manifest must not steer that elsewhere).
fn is_own_file(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains(':')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The files of the HLS media playlist `playlist` (a path relative to the output's directory,
/// `text` its content), relative to that directory, in play order: its `EXT-X-MAP` init
/// segment (fMP4) first, then its segments. Concatenated in this order they are the variant
/// as one stream (an fMP4 init followed by its fragments is a fragmented MP4; MPEG-TS
/// segments are a TS). `None` when it names a file outside the directory or nothing at all.
pub fn hls_variant_files(playlist: &str, text: &str) -> Option<Vec<String>> {
    let dir = playlist
        .rsplit_once('/')
        .map(|(d, _)| format!("{d}/"))
        .unwrap_or_default();
    let files: Vec<String> = hls_uris(text)
        .into_iter()
        .map(|u| format!("{dir}{u}"))
        .collect();
    (!files.is_empty() && files.iter().all(|f| is_own_file(f))).then_some(files)
}

/// The files of each video representation of an MPD, in manifest order (ffmpeg writes the
/// video adaptation set first, its representations in output-stream order: the ladder's
/// rungs), each init segment first, then its media segments in play order. Audio and caption
/// representations are left out. `None` entries stand for representations naming a file
/// outside the manifest's directory.
pub fn mpd_video_files(text: &str) -> Result<Vec<Option<Vec<String>>>, ManifestError> {
    Ok(mpd_representations(text)?
        .into_iter()
        .filter(|r| r.mime_type.starts_with("video/"))
        .map(|r| {
            let files: Vec<String> = std::iter::once(r.init).chain(r.media).collect();
            files.iter().all(|f| is_own_file(f)).then_some(files)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD type="static" mediaPresentationDuration="PT6.0S">
 <Period id="0" start="PT0.0S">
  <AdaptationSet id="0" contentType="video">
   <Representation id="0" mimeType="video/mp4" codecs="avc1.64001e" bandwidth="800000" width="640" height="360" sar="1:1">
    <SegmentTemplate timescale="12800" initialization="init-$RepresentationID$.m4s" media="seg-$RepresentationID$-$Number%05d$.m4s" startNumber="1">
     <SegmentTimeline>
      <S t="0" d="25600" r="2" />
     </SegmentTimeline>
    </SegmentTemplate>
   </Representation>
  </AdaptationSet>
  <AdaptationSet id="1" contentType="audio">
   <Representation id="2" mimeType="audio/mp4" codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="48000">
    <SegmentTemplate timescale="48000" initialization="init-$RepresentationID$.m4s" media="seg-$RepresentationID$-$Number%05d$.m4s" startNumber="1">
     <SegmentTimeline>
      <S t="0" d="92160" />
      <S d="96256" r="1" />
     </SegmentTimeline>
    </SegmentTemplate>
   </Representation>
  </AdaptationSet>
 </Period>
</MPD>"#;

    #[test]
    fn the_presentation_lasts_as_long_as_its_longest_timeline() {
        // Video 3 × 2 s = 6 s; audio 92160 + 2 × 96256 samples at 48 kHz = 5.9307 s.
        let out = with_exact_duration(MPD).unwrap();
        assert!(
            out.contains("mediaPresentationDuration=\"PT6.000S\""),
            "{out}"
        );
        let longer = MPD.replace("d=\"96256\" r=\"1\"", "d=\"97000\" r=\"1\"");
        // 92160 + 2 × 97000 = 286160 samples = 5.96167 s, still under the video's 6 s.
        assert!(with_exact_duration(&longer)
            .unwrap()
            .contains("\"PT6.000S\""));
        let audio_longest = MPD.replace("d=\"96256\" r=\"1\"", "d=\"100000\" r=\"1\"");
        // 292160 / 48000 = 6.08667 s, rounded up to the millisecond.
        assert!(with_exact_duration(&audio_longest)
            .unwrap()
            .contains("mediaPresentationDuration=\"PT6.087S\""));
        // Everything else is untouched.
        assert_eq!(out.replace("PT6.000S", "PT6.0S"), MPD);
        assert_eq!(with_exact_duration("<MPD></MPD>"), None);
    }

    #[test]
    fn ffmpeg_mpd_names_every_segment() {
        let reps = mpd_representations(MPD).unwrap();
        assert_eq!(reps.len(), 2);
        let v = &reps[0];
        assert_eq!(
            (v.width, v.height, v.bandwidth),
            (Some(640), Some(360), 800_000)
        );
        assert_eq!(v.init, "init-0.m4s");
        assert_eq!(
            v.media,
            ["seg-0-00001.m4s", "seg-0-00002.m4s", "seg-0-00003.m4s"]
        );
        assert_eq!(v.starts, [0, 25600, 51200]);
        let a = &reps[1];
        assert_eq!(a.codecs, "mp4a.40.2");
        assert_eq!(a.media.len(), 3);
        assert_eq!(a.starts, [0, 92160, 188416]);
        // Caption sidecars added to the MPD are whole files, not segmented representations.
        let t = crate::captions::part_track(0, 0, Some("en"), None);
        let with_captions = crate::captions::add_to_mpd(MPD, &[(&t, t.file.clone())]);
        assert!(with_captions.contains("text/vtt"));
        assert_eq!(mpd_representations(&with_captions).unwrap(), reps);
    }

    #[test]
    fn unknown_templates_and_empty_manifests_are_errors() {
        assert_eq!(
            mpd_representations("<MPD></MPD>"),
            Err(ManifestError::NoRepresentation)
        );
        let odd = MPD.replace("$Number%05d$", "$Bandwidth$");
        assert!(matches!(
            mpd_representations(&odd),
            Err(ManifestError::Template(_))
        ));
        let bare = r#"<Representation id="0"></Representation>"#;
        assert!(matches!(
            mpd_representations(bare),
            Err(ManifestError::NoTimeline(_))
        ));
    }

    #[test]
    fn hls_uris_include_init_and_rendition_playlists() {
        let master = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"audio_2\",DEFAULT=YES,URI=\"media_2.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"a\"\nmedia_0.m3u8\n";
        assert_eq!(hls_uris(master), ["media_2.m3u8", "media_0.m3u8"]);
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.m4s\"\n#EXTINF:2.0,\nseg-0-00001.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(hls_uris(media), ["init-0.m4s", "seg-0-00001.m4s"]);
    }

    #[test]
    fn rung_files_come_init_first_in_play_order_and_stay_inside() {
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init_1.mp4\"\n#EXTINF:2.0,\nseg_00000.m4s\n#EXTINF:2.0,\nseg_00001.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            hls_variant_files("v1/index.m3u8", media).unwrap(),
            ["v1/init_1.mp4", "v1/seg_00000.m4s", "v1/seg_00001.m4s"]
        );
        let ts = "#EXTM3U\n#EXTINF:2.0,\nseg_00000.ts\n#EXTINF:1.0,\nseg_00001.ts\n";
        assert_eq!(
            hls_variant_files("index.m3u8", ts).unwrap(),
            ["seg_00000.ts", "seg_00001.ts"]
        );
        assert_eq!(hls_variant_files("v0/index.m3u8", "#EXTM3U\n"), None);
        for bad in ["../../etc/passwd", "/etc/passwd", "file:x.ts", "a//b.ts"] {
            let text = format!("#EXTM3U\n#EXTINF:2.0,\n{bad}\n");
            assert_eq!(hls_variant_files("index.m3u8", &text), None, "{bad}");
        }
        // Video representations only, in the manifest's order, init first.
        let reps = mpd_video_files(MPD).unwrap();
        assert_eq!(reps.len(), 1);
        assert_eq!(
            reps[0].as_deref().unwrap(),
            [
                "init-0.m4s",
                "seg-0-00001.m4s",
                "seg-0-00002.m4s",
                "seg-0-00003.m4s"
            ]
        );
        let escaped = MPD.replace(
            "init-$RepresentationID$.m4s\" media=\"seg-$RepresentationID$",
            "../init.m4s\" media=\"seg-$RepresentationID$",
        );
        assert_eq!(mpd_video_files(&escaped).unwrap(), [None]);
    }
}
