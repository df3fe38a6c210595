//! Storyboards for scrub previews: JPEG sprite sheets (one frame every `interval` seconds, laid
//! out `columns` x `rows` per sheet by ffmpeg's `tile` filter) and the WebVTT thumbnails track
//! players read (Video.js, Shaka, Vidstack): one cue per frame, `sprite_001.jpg#xywh=x,y,w,h`.
//! The cue arithmetic is pure; [`crate::package::finish`] writes the track once ffmpeg has
//! written the sheets.

use crate::plan::Storyboard;

/// The WebVTT track's name inside the output directory (the output users open).
pub const TRACK: &str = "storyboard.vtt";

/// The `n`th sprite sheet (from 1, as ffmpeg's image2 muxer numbers them).
pub fn sheet_name(n: u32) -> String {
    format!("sprite_{n:03}.jpg")
}

/// ffmpeg's pattern for the sheets.
pub const SHEET_PATTERN: &str = "sprite_%03d.jpg";

/// One thumbnail: the time span it previews and its region in a sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    /// 1-based sheet number.
    pub sheet: u32,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// The cues of a `duration`-second output with tiles of `tile` pixels, at most `sheets` sheets
/// of them (what ffmpeg wrote): `fps=1/interval` gives a frame at 0, interval, 2·interval, ...
/// while the input lasts, and each previews up to the next one.
pub fn cues(sb: &Storyboard, duration: f64, tile: (u32, u32), sheets: u32) -> Vec<Cue> {
    let interval = sb.interval_seconds.max(0.001);
    let per_sheet = sb.columns * sb.rows;
    let frames = (duration / interval).ceil().max(1.0) as u64;
    let frames = frames.min(u64::from(sheets) * u64::from(per_sheet));
    (0..frames)
        .map(|i| {
            let i32_ = i as u32;
            let within = i32_ % per_sheet;
            let start = i as f64 * interval;
            Cue {
                start,
                end: ((i + 1) as f64 * interval).min(duration.max(start + 0.001)),
                sheet: i32_ / per_sheet + 1,
                x: (within % sb.columns) * tile.0,
                y: (within / sb.columns) * tile.1,
                w: tile.0,
                h: tile.1,
            }
        })
        .collect()
}

fn timestamp(t: f64) -> String {
    let ms = (t * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The WebVTT thumbnails track.
pub fn vtt(cues: &[Cue]) -> String {
    let mut s = String::from("WEBVTT\n");
    for c in cues {
        s.push_str(&format!(
            "\n{} --> {}\n{}#xywh={},{},{},{}\n",
            timestamp(c.start),
            timestamp(c.end),
            sheet_name(c.sheet),
            c.x,
            c.y,
            c.w,
            c.h
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Storyboard {
        Storyboard {
            interval_seconds: 2.0,
            columns: 3,
            rows: 2,
            tile_short_side: 90,
        }
    }

    #[test]
    fn cues_walk_the_grid_and_move_to_the_next_sheet() {
        let c = cues(&sb(), 13.0, (160, 90), 10);
        assert_eq!(c.len(), 7);
        assert_eq!((c[0].sheet, c[0].x, c[0].y), (1, 0, 0));
        assert_eq!((c[2].sheet, c[2].x, c[2].y), (1, 320, 0));
        assert_eq!((c[3].sheet, c[3].x, c[3].y), (1, 0, 90));
        assert_eq!((c[5].sheet, c[5].x, c[5].y), (1, 320, 90));
        assert_eq!((c[6].sheet, c[6].x, c[6].y), (2, 0, 0));
        assert_eq!((c[6].start, c[6].end), (12.0, 13.0));
        // Never more cues than the sheets ffmpeg wrote hold.
        assert_eq!(cues(&sb(), 13.0, (160, 90), 1).len(), 6);
    }

    #[test]
    fn vtt_has_timestamps_and_xywh_fragments() {
        let text = vtt(&cues(&sb(), 3.5, (160, 90), 1));
        assert_eq!(
            text,
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nsprite_001.jpg#xywh=0,0,160,90\n\
             \n00:00:02.000 --> 00:00:03.500\nsprite_001.jpg#xywh=160,0,160,90\n"
        );
        assert_eq!(timestamp(3725.25), "01:02:05.250");
    }
}
