//! HLS playlists written from segment lists (pure): a rung's media playlist for any contiguous
//! prefix of pieces (an `EVENT` playlist while the rest encodes, `VOD` with `EXT-X-ENDLIST` at
//! the end), and the master playlist. Also reads the segment list ffmpeg's HLS muxer wrote for
//! one piece, and the H.264/HEVC codec string from a segment's bytes.

use serde::{Deserialize, Serialize};

/// One media segment: its URI relative to the playlist and its exact duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// Still growing: players start at the beginning and poll for more.
    Event,
    /// Complete.
    Vod,
}

/// `EXT-X-TARGETDURATION`: every EXTINF rounded to the nearest integer must not exceed it.
pub fn target_duration(segments: &[Segment]) -> u32 {
    segments
        .iter()
        .map(|s| s.duration.round().max(1.0) as u32)
        .max()
        .unwrap_or(1)
}

/// A media playlist; segments are continuous (no `EXT-X-DISCONTINUITY`: the pieces carry the
/// input's own timeline). `target` is passed in so an EVENT prefix can announce the final
/// target duration, which must not change while the playlist grows.
pub fn media_playlist(segments: &[Segment], target: u32, kind: PlaylistKind) -> String {
    let mut p = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    p.push_str(&format!("#EXT-X-TARGETDURATION:{target}\n"));
    p.push_str("#EXT-X-MEDIA-SEQUENCE:0\n");
    p.push_str(match kind {
        PlaylistKind::Event => "#EXT-X-PLAYLIST-TYPE:EVENT\n",
        PlaylistKind::Vod => "#EXT-X-PLAYLIST-TYPE:VOD\n",
    });
    p.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    for s in segments {
        p.push_str(&format!("#EXTINF:{:.6},\n{}\n", s.duration, s.uri));
    }
    if kind == PlaylistKind::Vod {
        p.push_str("#EXT-X-ENDLIST\n");
    }
    p
}

/// One video variant of the master playlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub width: u32,
    pub height: u32,
    /// Video and audio codec strings, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// The `GROUP-ID` of its audio rendition, if audio is separate.
    pub audio_group: Option<String>,
}

/// An audio rendition (`EXT-X-MEDIA:TYPE=AUDIO`): the audio is encoded once for the whole
/// input and shared by every rung with the same audio plan, which is what lets the video be
/// encoded piecewise without AAC priming at every joint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioRendition {
    pub group: String,
    pub uri: String,
}

pub fn master_playlist(variants: &[Variant], audio: &[AudioRendition]) -> String {
    let mut p = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for a in audio {
        p.push_str(&format!(
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{}\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,URI=\"{}\"\n",
            a.group, a.uri
        ));
    }
    for v in variants {
        p.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION={}x{},CODECS=\"{}\"",
            v.bandwidth, v.width, v.height, v.codecs
        ));
        if let Some(g) = &v.audio_group {
            p.push_str(&format!(",AUDIO=\"{g}\""));
        }
        p.push_str(&format!("\n{}\n", v.uri));
    }
    p
}

/// The segments of a playlist ffmpeg's HLS muxer wrote (EXTINF + URI pairs), URIs as written.
pub fn parse_segments(playlist: &str) -> Vec<Segment> {
    let mut out = vec![];
    let mut pending: Option<f64> = None;
    for line in playlist.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            pending = rest.split(',').next().and_then(|d| d.trim().parse().ok());
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(d) = pending.take() {
                out.push(Segment {
                    uri: line.to_string(),
                    duration: d,
                });
            }
        }
    }
    out
}

/// The RFC 6381 codec string of the first H.264 SPS in `bytes` (an Annex B stream, e.g. a TS
/// segment's payload), the way ffmpeg's HLS muxer writes it: `avc1.PPCCLL`.
pub fn avc1_codec(bytes: &[u8]) -> Option<String> {
    bytes
        .windows(7)
        .find(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x1f == 7)
        .map(|w| format!("avc1.{:02x}{:02x}{:02x}", w[4], w[5], w[6]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(durations: &[f64]) -> Vec<Segment> {
        durations
            .iter()
            .enumerate()
            .map(|(i, d)| Segment {
                uri: format!("seg_{i:05}.ts"),
                duration: *d,
            })
            .collect()
    }

    #[test]
    fn vod_playlist_has_endlist_no_discontinuity_and_the_rounded_target() {
        let s = segs(&[4.0, 4.0, 4.48, 1.2]);
        assert_eq!(target_duration(&s), 4);
        let p = media_playlist(&s, target_duration(&s), PlaylistKind::Vod);
        assert!(p.contains("#EXT-X-TARGETDURATION:4\n"));
        assert!(p.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(p.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!p.contains("DISCONTINUITY"));
        assert_eq!(parse_segments(&p), s);
        assert_eq!(target_duration(&segs(&[4.6])), 5);
    }

    #[test]
    fn event_prefix_grows_without_endlist() {
        let all = segs(&[4.0, 4.0, 4.0, 2.0]);
        let p = media_playlist(&all[..2], 4, PlaylistKind::Event);
        assert!(p.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
        assert!(!p.contains("ENDLIST"));
        assert_eq!(parse_segments(&p), all[..2].to_vec());
    }

    #[test]
    fn master_names_the_audio_group_codecs_and_resolution() {
        let m = master_playlist(
            &[Variant {
                uri: "v0/index.m3u8".into(),
                bandwidth: 1_000_000,
                width: 640,
                height: 360,
                codecs: "avc1.64001e,mp4a.40.2".into(),
                audio_group: Some("a96".into()),
            }],
            &[AudioRendition {
                group: "a96".into(),
                uri: "a96/index.m3u8".into(),
            }],
        );
        assert!(m.contains("TYPE=AUDIO,GROUP-ID=\"a96\""));
        assert!(m.contains(
            "BANDWIDTH=1000000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"a96\"\nv0/index.m3u8\n"
        ));
    }

    #[test]
    fn avc1_string_comes_from_the_sps() {
        let bytes = [
            0x47, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1e, 0xac,
        ];
        assert_eq!(avc1_codec(&bytes).as_deref(), Some("avc1.64001e"));
        assert_eq!(avc1_codec(&[0, 0, 1, 0x65, 1, 2, 3]), None);
    }
}
