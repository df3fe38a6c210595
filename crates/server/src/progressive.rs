//! Progressive HLS of a split job: while its ranges encode, each HLS output is served as
//! `EVENT` playlists over the longest run of ranges encoded in order from the start (with the
//! audio), so a player starts while the rest encodes; once the job succeeds, the stitched `VOD`
//! playlists (`EXT-X-ENDLIST`) are served at the same paths, over segments with the same names
//! and bytes.
//!
//! Nothing is written for it: the playlists are made on request ([`LiveHls`], pure) from the
//! outputs of the job's succeeded tasks, which the store commits atomically. So a playlist only
//! ever grows, and two workers finishing ranges at once cannot race to publish a shorter one.
//! Segments are served from where their `encode_segment` / `encode_audio` task stored them
//! (the job's intermediate prefix). The worker that completes the task making the outputs
//! playable records the moment (`playable_at`, [`reelay_jobs::JobStore::mark_playable`]); the
//! api serves the live view only from then on.

use crate::task_payloads::{AudioResult, SegmentResult, SplitResult, ENCODE_AUDIO};
use reelay_media::split::plan::ts_ladder;
use reelay_media::split::{audio_tasks, hls_plan, HlsPlan};
use std::collections::HashMap;

/// The HLS outputs of a running split job as its succeeded tasks make them now.
#[derive(Debug, Default)]
pub struct LiveHls {
    /// One plan per split HLS output, paths relative to the job's outputs.
    plans: Vec<HlsPlan>,
    /// Storage key of every intermediate file, by its path relative to the parts (as the
    /// plans' segment sources name them).
    keys: HashMap<String, String>,
    /// Whether every audio track the split outputs use is encoded.
    audio_done: bool,
}

impl LiveHls {
    /// Made from the job's spec and the outputs of its succeeded tasks (by task id,
    /// `{job}.{key}`). `None` when the job is not split (no `split` output yet), has no split
    /// HLS output, or its task outputs do not read (then nothing is served early).
    pub fn new(spec_json: &str, outputs: &[(String, serde_json::Value)]) -> Option<LiveHls> {
        let key = |id: &str| id.rsplit_once('.').map(|(_, k)| k.to_string());
        let mut split: Option<SplitResult> = None;
        let (mut segments, mut audio): (Vec<SegmentResult>, Vec<AudioResult>) = (vec![], vec![]);
        for (id, v) in outputs {
            let Some(k) = key(id) else { continue };
            if k == "split" {
                split = serde_json::from_value(v.clone()).ok();
            } else if k.starts_with("seg-") {
                segments.push(serde_json::from_value(v.clone()).ok()?);
            } else if k.starts_with("audio-") {
                audio.push(serde_json::from_value(v.clone()).ok()?);
            }
        }
        let split = split?;
        let spec: reelay_protocol::JobSpec = serde_json::from_str(spec_json).ok()?;
        let mut renditions = reelay_media::resolve_outputs(&spec.outputs).ok()?;
        renditions.retain(|r| split.layout.split.contains(&r.name));
        let needed = audio_tasks(&renditions, &split.info);
        let audio_done = needed
            .iter()
            .all(|t| audio.iter().any(|a| a.output.kbps == t.kbps));
        let pieces: Vec<_> = segments.iter().map(|s| s.output.clone()).collect();
        let tracks: Vec<_> = audio.iter().map(|a| a.output.clone()).collect();
        let mut plans = vec![];
        for r in renditions.iter().filter(|r| ts_ladder(r).is_some()) {
            plans.push(hls_plan(r, &split.info, &pieces, split.layout.ranges.len(), &tracks).ok()?);
        }
        if plans.is_empty() {
            return None;
        }
        let mut keys = HashMap::new();
        for s in &segments {
            for f in &s.files {
                keys.insert(f.clone(), format!("{}/{f}", s.prefix));
            }
        }
        for a in &audio {
            for f in &a.files {
                keys.insert(f.clone(), format!("{}/{f}", a.prefix));
            }
        }
        Some(LiveHls {
            plans,
            keys,
            audio_done,
        })
    }

    /// A player can start on every split HLS output: each has its first range (so a master
    /// playlist and one segment per rung) and the audio it lists is encoded (a master
    /// playlist must not gain its audio groups later).
    pub fn playable(&self) -> bool {
        self.audio_done && self.plans.iter().all(|p| p.ranges > 0)
    }

    /// The playlist at `path` (relative to the job's outputs), while playable.
    pub fn playlist(&self, path: &str) -> Option<&str> {
        if !self.playable() {
            return None;
        }
        self.plans.iter().find_map(|p| p.playlist(path))
    }

    /// The storage key of the segment at `path`, if a playlist lists it.
    pub fn segment_key(&self, path: &str) -> Option<&str> {
        if !self.playable() {
            return None;
        }
        let src = self.plans.iter().find_map(|p| p.source_of(path))?;
        self.keys.get(src).map(String::as_str)
    }
}

/// Whether a task of this kind can make a split job playable when it succeeds.
pub fn may_make_playable(kind: &str) -> bool {
    kind == crate::task_payloads::ENCODE_SEGMENT || kind == ENCODE_AUDIO
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"outputs":[{"preset":"hls-abr"},{"preset":"mp4-360p"}]}"#;

    #[test]
    fn nothing_is_served_early_without_a_readable_split() {
        // Not split (yet): no split output among the succeeded tasks.
        assert!(LiveHls::new(SPEC, &[]).is_none());
        let seg = (
            "j.seg-00000".to_string(),
            serde_json::json!({"prefix": "p"}),
        );
        assert!(LiveHls::new(SPEC, std::slice::from_ref(&seg)).is_none());
        // A split output that does not read as one, or a range that does not: nothing early.
        let bad_split = ("j.split".to_string(), serde_json::json!({"prefix": 1}));
        assert!(LiveHls::new(SPEC, &[bad_split]).is_none());
        // A spec that no longer reads.
        assert!(LiveHls::new("not json", &[]).is_none());
    }

    #[test]
    fn an_empty_view_is_not_playable_and_serves_nothing() {
        let hls = LiveHls::default();
        // Audio not known encoded: not playable, so no playlist or segment is served early.
        assert!(!hls.playable());
        assert_eq!(hls.playlist("hls-abr/master.m3u8"), None);
        assert_eq!(hls.segment_key("hls-abr/v0/seg_00000.ts"), None);
    }

    #[test]
    fn only_ranges_and_audio_tracks_can_make_a_job_playable() {
        assert!(may_make_playable("encode_segment"));
        assert!(may_make_playable("encode_audio"));
        for kind in ["split", "stitch", "transcode"] {
            assert!(!may_make_playable(kind), "{kind}");
        }
    }
}
