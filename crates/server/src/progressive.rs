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
//!
//! A player asks for every rung's and audio group's playlist every target duration and for each
//! segment, and several players may watch one job: [`LiveCache`] keeps each job's view for
//! [`LIVE_VIEW_TTL`], so those requests read the job's task outputs (every range's segment list)
//! and plan the playlists once a second at most, not once each. They still read the job's row
//! (its owner, and whether it ended: a job that succeeded is served its VOD playlists at once).

use crate::task_payloads::{AudioResult, SegmentResult, SplitResult, ENCODE_AUDIO};
use reelay_media::split::plan::ts_ladder;
use reelay_media::split::{audio_tasks, hls_plan, HlsPlan};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long a job's live view is reused: well under a segment (4 s by default), so a range
/// encoded appears in the playlists at most a second later than it would uncached.
pub const LIVE_VIEW_TTL: Duration = Duration::from_secs(1);

/// At most this many jobs' views are kept; past it, expired ones are dropped, then the oldest.
const MAX_CACHED_JOBS: usize = 256;

/// The live views of the running split jobs players asked for recently (time passed in).
#[derive(Debug)]
pub struct LiveCache {
    ttl: Duration,
    max_jobs: usize,
    views: Mutex<HashMap<String, (Instant, Arc<LiveHls>)>>,
}

impl Default for LiveCache {
    fn default() -> Self {
        LiveCache::new(LIVE_VIEW_TTL, MAX_CACHED_JOBS)
    }
}

impl LiveCache {
    pub fn new(ttl: Duration, max_jobs: usize) -> LiveCache {
        LiveCache {
            ttl,
            max_jobs: max_jobs.max(1),
            views: Mutex::new(HashMap::new()),
        }
    }

    /// The view of `job` made less than the TTL before `now`.
    pub fn get(&self, job: &str, now: Instant) -> Option<Arc<LiveHls>> {
        let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views
            .get(job)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `view` as `job`'s, made at `now`.
    pub fn put(&self, job: &str, view: LiveHls, now: Instant) -> Arc<LiveHls> {
        let view = Arc::new(view);
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if views.len() >= self.max_jobs && !views.contains_key(job) {
            let ttl = self.ttl;
            views.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if views.len() >= self.max_jobs {
                let oldest = views
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    views.remove(&k);
                }
            }
        }
        views.insert(job.to_string(), (now, view.clone()));
        view
    }

    /// Jobs whose views are kept (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    use crate::task_payloads::{AudioResult, SegmentResult, SplitResult};
    use reelay_media::split::playlist::Segment;
    use reelay_media::split::{AudioOutput, HlsPiece, Manifest, Range, SegmentOutput, SplitLayout};

    /// The outputs of a split job's tasks for a 8 s 640x360 input in two 4 s ranges (the
    /// 360p rung, its 96 kbps audio group, and an MP4 with 128 kbps audio), `ranges` of them
    /// encoded, the audio tracks encoded or not.
    fn outputs(ranges: &[usize], audio: bool) -> Vec<(String, serde_json::Value)> {
        let info = reelay_media::probe::parse_probe_json(
            r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":640,"height":360,"avg_frame_rate":"25/1"},
               {"index":1,"codec_type":"audio","codec_name":"aac","channels":2,"sample_rate":"48000"}],
               "format":{"format_name":"mov,mp4,m4a","duration":"8.0"}}"#,
        )
        .unwrap();
        let split = SplitResult {
            prefix: "tasks/j/split/a1".into(),
            layout: SplitLayout {
                segment_seconds: 4,
                ranges: (0..2)
                    .map(|i| Range {
                        index: i,
                        start: 4.0 * i as f64,
                        end: 4.0 * (i + 1) as f64,
                    })
                    .collect(),
                split: vec!["hls-abr".into(), "mp4-360p".into()],
                whole: vec![],
            },
            manifest: Manifest {
                origin: 0.0,
                file_offset: 1.4,
                frame_rate: 25.0,
                pieces: vec![],
            },
            info,
        };
        let mut out = vec![("j.split".to_string(), serde_json::to_value(&split).unwrap())];
        for &i in ranges {
            let seg = format!("seg_{i:05}.ts");
            let r = SegmentResult {
                prefix: format!("tasks/j/seg-{i:05}/a1"),
                output: SegmentOutput {
                    index: i,
                    files: vec![("mp4-360p".into(), format!("mp4-360p/piece_{i:05}.ts"))],
                    hls: vec![HlsPiece {
                        rendition: "hls-abr".into(),
                        rung: 0,
                        segments: vec![Segment {
                            uri: seg.clone(),
                            duration: 4.0,
                        }],
                        codec: "avc1.64001e".into(),
                        width: 640,
                        height: 360,
                        quality: None,
                    }],
                    file_quality: vec![],
                },
                files: vec![format!("hls-abr/v0/{seg}")],
            };
            out.push((format!("j.seg-{i:05}"), serde_json::to_value(&r).unwrap()));
        }
        if audio {
            let hls = ["seg_00000.ts", "seg_00001.ts"];
            let a = AudioResult {
                prefix: "tasks/j/audio-96/a1".into(),
                output: AudioOutput {
                    kbps: 96,
                    track: "audio/aac_96/audio.m4a".into(),
                    hls_dir: Some("audio/aac_96/hls".into()),
                    hls: hls
                        .iter()
                        .map(|u| Segment {
                            uri: u.to_string(),
                            duration: 4.0,
                        })
                        .collect(),
                },
                files: hls
                    .iter()
                    .map(|u| format!("audio/aac_96/hls/{u}"))
                    .collect(),
            };
            out.push(("j.audio-96".into(), serde_json::to_value(&a).unwrap()));
            // The MP4's track, no HLS segments.
            let mp4 = AudioResult {
                prefix: "tasks/j/audio-128/a1".into(),
                output: AudioOutput {
                    kbps: 128,
                    track: "audio/aac_128/audio.m4a".into(),
                    hls_dir: None,
                    hls: vec![],
                },
                files: vec!["audio/aac_128/audio.m4a".into()],
            };
            out.push(("j.audio-128".into(), serde_json::to_value(&mp4).unwrap()));
        }
        out
    }

    #[test]
    fn the_first_range_plays_as_event_and_all_of_them_as_vod() {
        // Range 1 alone (range 0 still encoding), or no audio yet: nothing is served early.
        let hls = LiveHls::new(SPEC, &outputs(&[1], true)).unwrap();
        assert!(!hls.playable());
        assert_eq!(hls.playlist("hls-abr/master.m3u8"), None);
        let hls = LiveHls::new(SPEC, &outputs(&[0], false)).unwrap();
        assert!(!hls.playable());

        // Range 0 and the audio: EVENT playlists over the first 4 s.
        let hls = LiveHls::new(SPEC, &outputs(&[0], true)).unwrap();
        assert!(hls.playable());
        let master = hls.playlist("hls-abr/master.m3u8").unwrap();
        assert!(master.contains("RESOLUTION=640x360"), "{master}");
        assert!(master.contains("AUDIO=\"a96\"") && master.contains("v0/index.m3u8"));
        let video = hls.playlist("hls-abr/v0/index.m3u8").unwrap();
        assert!(video.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{video}");
        assert!(!video.contains("ENDLIST") && !video.contains("DISCONTINUITY"));
        assert!(video.contains("seg_00000.ts") && !video.contains("seg_00001.ts"));
        // The audio is listed as far as the video goes.
        let audio = hls.playlist("hls-abr/a96/index.m3u8").unwrap();
        assert!(audio.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{audio}");
        assert!(audio.contains("seg_00000.ts") && !audio.contains("seg_00001.ts"));
        // Segments are served from the tasks' prefixes, and only those listed.
        assert_eq!(
            hls.segment_key("hls-abr/v0/seg_00000.ts"),
            Some("tasks/j/seg-00000/a1/hls-abr/v0/seg_00000.ts")
        );
        assert_eq!(
            hls.segment_key("hls-abr/a96/seg_00000.ts"),
            Some("tasks/j/audio-96/a1/audio/aac_96/hls/seg_00000.ts")
        );
        assert_eq!(hls.segment_key("hls-abr/v0/seg_00001.ts"), None);
        assert_eq!(hls.segment_key("hls-abr/a96/seg_00001.ts"), None);
        // A file output is never served early.
        assert_eq!(hls.playlist("mp4-360p.mp4"), None);

        // Every range in: VOD playlists with EXT-X-ENDLIST that continue the EVENT ones.
        let done = LiveHls::new(SPEC, &outputs(&[1, 0], true)).unwrap();
        let vod = done.playlist("hls-abr/v0/index.m3u8").unwrap();
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"));
        assert!(vod.starts_with(
            video
                .split("#EXTINF")
                .next()
                .unwrap()
                .replace("EVENT", "VOD")
                .as_str()
        ));
        assert!(
            vod.contains("seg_00000.ts\n#EXTINF:4.000000,\nseg_00001.ts"),
            "{vod}"
        );
        let audio = done.playlist("hls-abr/a96/index.m3u8").unwrap();
        assert!(audio.contains("seg_00001.ts") && audio.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(
            done.segment_key("hls-abr/v0/seg_00001.ts"),
            Some("tasks/j/seg-00001/a1/hls-abr/v0/seg_00001.ts")
        );
    }

    #[test]
    fn a_view_is_reused_for_the_ttl_then_made_again() {
        let cache = LiveCache::new(Duration::from_secs(1), 8);
        let t0 = Instant::now();
        assert!(cache.get("j", t0).is_none());
        let first = cache.put("j", LiveHls::new(SPEC, &outputs(&[0], true)).unwrap(), t0);
        let hit = cache.get("j", t0 + Duration::from_millis(999)).unwrap();
        assert!(Arc::ptr_eq(&first, &hit));
        assert!(hit
            .playlist("hls-abr/v0/index.m3u8")
            .unwrap()
            .contains("EVENT"));
        // Other jobs are not served this one's view.
        assert!(cache.get("k", t0).is_none());
        // Expired at the TTL: the caller reads the task outputs again and puts the new view.
        assert!(cache.get("j", t0 + Duration::from_secs(1)).is_none());
        let t1 = t0 + Duration::from_secs(2);
        cache.put(
            "j",
            LiveHls::new(SPEC, &outputs(&[0, 1], true)).unwrap(),
            t1,
        );
        let vod = cache.get("j", t1).unwrap();
        assert!(vod
            .playlist("hls-abr/v0/index.m3u8")
            .unwrap()
            .contains("ENDLIST"));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_holds_a_bounded_number_of_jobs() {
        let cache = LiveCache::new(Duration::from_secs(1), 2);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        cache.put("a", LiveHls::default(), t0);
        cache.put("b", LiveHls::default(), t0 + ms(10));
        // Full of fresh views: the oldest goes.
        cache.put("c", LiveHls::default(), t0 + ms(20));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a", t0 + ms(20)).is_none());
        assert!(cache.get("b", t0 + ms(20)).is_some() && cache.get("c", t0 + ms(20)).is_some());
        // Expired views go first, all of them.
        let later = t0 + Duration::from_secs(5);
        cache.put("d", LiveHls::default(), later);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("d", later).is_some());
    }

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
