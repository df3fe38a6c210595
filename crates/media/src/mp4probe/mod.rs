//! An in-process probe for the common upload: ISO-BMFF (MP4/MOV) with one H.264 video track
//! and at most one AAC-LC audio track. It exists because one `ffprobe` process costs ~74 ms of
//! CPU per submission, nearly all of it loading libav* before `main` (issue 18), while the
//! answer for such a file sits in a few kilobytes of `moov`.
//!
//! The contract is strict: [`probe_file`] returns exactly the [`MediaInfo`] that
//! [`crate::probe::parse_probe_json`] would make of ffprobe's output, or `None` ("not sure",
//! run ffprobe). A fallback is always safe; a wrong answer is not, so everything outside what
//! is fully understood is `None`: fragmented files, other codecs or track types, cover art,
//! track titles, edit lists ffmpeg would apply differently, interlaced or non-8-bit-4:2:0
//! H.264, HE-AAC. Only box headers and `moov` are read (`mdat` is seeked past), `moov` is
//! capped at [`MAX_MOOV_BYTES`] and the number of boxes at [`MAX_BOXES`]; the nesting depth is
//! fixed by the parse itself (moov/trak/mdia/minf/stbl/stsd/entry), never by the file.
//!
//! What it cannot see: whether `mdat` holds decodable pictures. ffprobe decodes a few frames;
//! this does not, so a file with a valid `moov` and garbage media is admitted and its encode
//! fails with a job error (`transcode_failed`, tested in crates/server/tests/garbage_mdat.rs), as a
//! file corrupt past its first frames always did.

mod aac;
mod avc;
mod bits;
mod boxes;
mod keyframes;

pub use keyframes::{keyframes_file, keyframes_reader, Keyframes};

use crate::probe::{FieldOrder, MediaInfo, StreamInfo, StreamKind};
use boxes::{be_u16, be_u32, be_u64, children, only, table, FourCc};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Larger `moov`s (hours of video with per-sample tables) go to ffprobe.
pub const MAX_MOOV_BYTES: u64 = 32 << 20;
/// Boxes read inside `moov`, all levels together.
pub const MAX_BOXES: usize = 10_000;
/// Top-level boxes scanned before giving up.
const MAX_TOP_BOXES: usize = 256;
/// ffprobe's `format_name` for the mov demuxer.
const FORMAT_NAME: &str = "mov,mp4,m4a,3gp,3g2,mj2";

/// Probes a file on disk; `None` means "ask ffprobe".
pub fn probe_file(path: &Path) -> Option<MediaInfo> {
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    probe_reader(&mut f, size)
}

/// Probes `size` bytes of a seekable source.
pub fn probe_reader<R: Read + Seek>(r: &mut R, size: u64) -> Option<MediaInfo> {
    let top = scan_top_level(r, size)?;
    parse_movie(&top.moov, size, &top.mdats)
}

struct TopLevel {
    moov: Vec<u8>,
    /// Byte ranges of the `mdat` payloads: every chunk offset must fall inside one.
    mdats: Vec<(u64, u64)>,
}

fn scan_top_level<R: Read + Seek>(r: &mut R, size: u64) -> Option<TopLevel> {
    let (mut pos, mut moov, mut mdats) = (0u64, None, Vec::new());
    for n in 0.. {
        if pos == size {
            break;
        }
        if n >= MAX_TOP_BOXES || size - pos < 8 {
            return None;
        }
        let mut hdr = [0u8; 16];
        r.seek(SeekFrom::Start(pos)).ok()?;
        r.read_exact(&mut hdr[..8]).ok()?;
        let typ: FourCc = hdr.get(4..8)?.try_into().ok()?;
        let (len, hlen) = match be_u32(&hdr, 0)? {
            0 => (size - pos, 8),
            1 => {
                r.read_exact(hdr.get_mut(8..16)?).ok()?;
                (be_u64(&hdr, 8)?, 16)
            }
            l => (u64::from(l), 8),
        };
        if len < hlen || len > size - pos {
            return None;
        }
        match (&typ, n) {
            (b"ftyp", 0) => {}
            (_, 0) => return None,
            (b"moov", _) => {
                if moov.is_some() || len - hlen > MAX_MOOV_BYTES {
                    return None;
                }
                let mut buf = vec![0u8; usize::try_from(len - hlen).ok()?];
                r.seek(SeekFrom::Start(pos + hlen)).ok()?;
                r.read_exact(&mut buf).ok()?;
                moov = Some(buf);
            }
            // A handful of mdats at most: every chunk offset is looked up among them.
            (b"mdat", _) if mdats.len() < 16 => mdats.push((pos + hlen, pos + len)),
            (b"free" | b"skip" | b"wide" | b"uuid", _) => {}
            // moof/sidx/styp/mfra (fragmented), and anything unknown.
            _ => return None,
        }
        pos += len;
    }
    Some(TopLevel { moov: moov?, mdats })
}

fn parse_movie(moov: &[u8], file_size: u64, mdats: &[(u64, u64)]) -> Option<MediaInfo> {
    let mut budget = MAX_BOXES;
    let kids = children(moov, &mut budget)?;
    let mvhd = only(&kids, b"mvhd")?;
    let (movie_ts, movie_dur, matrix_at) = match *mvhd.first()? {
        0 => (be_u32(mvhd, 12)?, u64::from(be_u32(mvhd, 16)?), 36),
        1 => (be_u32(mvhd, 20)?, be_u64(mvhd, 24)?, 48),
        _ => return None,
    };
    // The movie matrix multiplies every track's: only the identity keeps rotation simple.
    // ffmpeg reads time scales as signed: above i32::MAX it substitutes 1.
    if movie_ts == 0
        || movie_ts > i32::MAX as u32
        || movie_dur == 0
        || rotation(mvhd, matrix_at)? != 0
    {
        return None;
    }
    let mut streams = Vec::new();
    for (typ, body) in &kids {
        match typ {
            b"mvhd" | b"iods" | b"free" | b"skip" => {}
            // Cover art in udta/meta/ilst becomes an attached-picture stream in ffprobe.
            b"udta" | b"meta" if !body.windows(4).any(|w| w == b"covr") => {}
            b"trak" => {
                let index = u32::try_from(streams.len()).ok()?;
                streams.push(parse_trak(body, index, movie_ts, &mut budget, mdats)?);
            }
            _ => return None, // mvex (fragmented), cmov, anything unknown
        }
    }
    let videos = streams
        .iter()
        .filter(|s| s.kind == StreamKind::Video)
        .count();
    let audios = streams
        .iter()
        .filter(|s| s.kind == StreamKind::Audio)
        .count();
    if streams.is_empty() || videos > 1 || audios > 1 {
        return None;
    }
    // ffmpeg takes the container duration from mvhd, in microseconds (av_rescale rounds to
    // nearest), and the bit rate from the file size over that duration.
    let us = rescale(movie_dur, 1_000_000, u64::from(movie_ts))?;
    if us == 0 || us > i64::MAX as u64 {
        return None;
    }
    let bit_rate = (file_size as f64 * 8.0 * 1_000_000.0) / us as f64;
    Some(MediaInfo {
        format_name: FORMAT_NAME.to_string(),
        duration: Some(printed_seconds(us, 1_000_000)?),
        // ffprobe prints a bit rate of 0 as N/A.
        bit_rate: (bit_rate <= i64::MAX as f64)
            .then_some(bit_rate as u64)
            .filter(|b| *b > 0),
        streams,
    })
}

/// `value * num / den` rounded half away from zero, as ffmpeg's `av_rescale`.
fn rescale(value: u64, num: u64, den: u64) -> Option<u64> {
    if den == 0 {
        return None;
    }
    let r = (u128::from(value) * u128::from(num) + u128::from(den) / 2) / u128::from(den);
    u64::try_from(r).ok()
}

/// A time as ffprobe prints it (`%f` of ts × 1/timescale) and [`crate::probe`] parses it back.
fn printed_seconds(ts: u64, timescale: u32) -> Option<f64> {
    let d = ts as f64 * (1.0 / f64::from(timescale));
    format!("{d:.6}").parse().ok()
}

/// Clockwise rotation of a 3×3 display matrix (a b u / c d v / x y w at `at`), as
/// [`crate::probe`] derives it from ffprobe's side data; `None` unless the matrix is an exact
/// rotation by a multiple of 90° (no scaling, mirroring or perspective).
fn rotation(p: &[u8], at: usize) -> Option<u32> {
    let m = |i: usize| -> Option<i32> { Some(be_u32(p, at + 4 * i)? as i32) };
    let (a, b, u, c, d, v, w) = (m(0)?, m(1)?, m(2)?, m(3)?, m(4)?, m(5)?, m(8)?);
    if u != 0 || v != 0 || w != 0x4000_0000 || Some(c) != b.checked_neg() || d != a {
        return None;
    }
    // ffprobe reports -atan2(b, a) counter-clockwise; reelay keeps the clockwise angle.
    match (a, b) {
        (0x10000, 0) => Some(0),
        (0, 0x10000) => Some(90),
        (-0x10000, 0) => Some(180),
        (0, -0x10000) => Some(270),
        _ => None,
    }
}

enum Codec {
    Video(avc::Avc),
    Audio(aac::Aac),
}

fn parse_trak(
    trak: &[u8],
    index: u32,
    movie_ts: u32,
    budget: &mut usize,
    mdats: &[(u64, u64)],
) -> Option<StreamInfo> {
    let kids = children(trak, budget)?;
    if kids
        .iter()
        .any(|(t, _)| !matches!(t, b"tkhd" | b"edts" | b"mdia" | b"free" | b"skip"))
    {
        return None; // udta (a title), tref (chapters, timecode), meta, ...
    }
    let tkhd = only(&kids, b"tkhd")?;
    let matrix_at = match *tkhd.first()? {
        0 => 4 + 20 + 16,
        1 => 4 + 32 + 16,
        _ => return None,
    };
    let rotation = rotation(tkhd, matrix_at)?;
    let edits = match kids.iter().filter(|(t, _)| t == b"edts").count() {
        0 => Vec::new(),
        1 => {
            let edts = children(only(&kids, b"edts")?, budget)?;
            known(&edts, &[b"elst"])?;
            parse_elst(only(&edts, b"elst")?)?
        }
        _ => return None,
    };

    let mdia = children(only(&kids, b"mdia")?, budget)?;
    // Every box that ffmpeg reads for what it reports must be one understood here: an `elng`
    // (extended language) or `cslg` (composition shift) would change the answer.
    known(&mdia, &[b"mdhd", b"hdlr", b"minf"])?;
    let mdhd = only(&mdia, b"mdhd")?;
    let (ts, mdhd_dur, lang) = match *mdhd.first()? {
        0 => (
            be_u32(mdhd, 12)?,
            u64::from(be_u32(mdhd, 16)?),
            be_u16(mdhd, 20)?,
        ),
        1 => (be_u32(mdhd, 20)?, be_u64(mdhd, 24)?, be_u16(mdhd, 32)?),
        _ => return None,
    };
    if ts == 0
        || ts > i32::MAX as u32
        || mdhd_dur == 0
        || mdhd_dur >= u64::from(u32::MAX) && *mdhd.first()? == 0
    {
        return None;
    }
    let language = language(lang)?;
    let handler: FourCc = only(&mdia, b"hdlr")?.get(8..12)?.try_into().ok()?;
    let minf = children(only(&mdia, b"minf")?, budget)?;
    known(&minf, &[b"vmhd", b"smhd", b"hdlr", b"dinf", b"stbl"])?;
    check_dref(only(&minf, b"dinf")?, budget)?;
    let stbl = children(only(&minf, b"stbl")?, budget)?;
    known(
        &stbl,
        &[
            b"stsd", b"stts", b"stss", b"ctts", b"stsc", b"stsz", b"stco", b"co64", b"sgpd",
            b"sbgp", b"sdtp",
        ],
    )?;
    let codec = parse_stsd(only(&stbl, b"stsd")?, budget)?;
    match (&handler, &codec) {
        (b"vide", Codec::Video(_)) | (b"soun", Codec::Audio(_)) => {}
        _ => return None,
    }

    // Sample tables: counts must agree, data must lie inside an mdat.
    let (_, stts) = table(only(&stbl, b"stts")?, 8)?;
    let (mut frames, mut stts_sum) = (0u64, 0u64);
    let mut deltas = Vec::with_capacity(stts.len() / 8);
    for e in stts.chunks_exact(8) {
        let (count, delta) = (u64::from(be_u32(e, 0)?), u64::from(be_u32(e, 4)?));
        frames = frames.checked_add(count)?;
        stts_sum = stts_sum.checked_add(count.checked_mul(delta)?)?;
        deltas.push((count, delta));
    }
    let stsz = only(&stbl, b"stsz")?;
    let (fixed, sizes) = (be_u32(stsz, 4)?, u64::from(be_u32(stsz, 8)?));
    let first_size = if fixed != 0 { fixed } else { be_u32(stsz, 12)? };
    if frames == 0 || stts_sum == 0 || sizes != frames {
        return None;
    }
    only(&stbl, b"stsc")?;
    // Chunk offsets are checked as they are read: a hostile moov may hold millions.
    let (width, table_box) = match (only(&stbl, b"stco"), only(&stbl, b"co64")) {
        (Some(p), None) => (4, p),
        (None, Some(p)) => (8, p),
        _ => return None,
    };
    let inside = |o: u64, len: u64| {
        mdats
            .iter()
            .any(|&(s, e)| o >= s && o.checked_add(len).is_some_and(|end| end <= e))
    };
    let mut chunks = table(table_box, width)?.1.chunks_exact(width).map(|e| {
        if width == 4 {
            be_u32(e, 0).map(u64::from)
        } else {
            be_u64(e, 0)
        }
    });
    if !inside(chunks.next()??, u64::from(first_size)) {
        return None;
    }
    for o in chunks {
        if !inside(o?, 0) {
            return None;
        }
    }
    if let Some(stss) = only(&stbl, b"stss") {
        if be_u32(table(stss, 4)?.1, 0)? != 1 {
            return None; // the first sample is not a keyframe
        }
    } else if stbl.iter().any(|(t, _)| t == b"stss") {
        return None;
    }
    let first_cts = match stbl.iter().filter(|(t, _)| t == b"ctts").count() {
        0 => 0,
        1 => {
            let (_, c) = table(only(&stbl, b"ctts")?, 8)?;
            let offs: Vec<i32> = c
                .chunks_exact(8)
                .filter_map(|e| be_u32(e, 4).map(|o| o as i32))
                .collect();
            if offs.iter().any(|&o| o < 0) {
                return None; // ffmpeg shifts dts for negative offsets
            }
            i64::from(*offs.first()?)
        }
        _ => return None,
    };

    // ffmpeg: duration = min(mdhd, sum of stts), then cut to the edit: min(that, the edit's
    // length) for the edits below, as the differential test pins down. Without an edit list
    // (or with an empty one) ffmpeg may still trim AAC priming, so only a single edit counts.
    let d0 = mdhd_dur.min(stts_sum);
    let [(seg, media_time)] = edits.as_slice() else {
        return None;
    };
    let seg = rescale(*seg, u64::from(ts), u64::from(movie_ts))?;
    let m = u64::try_from(*media_time).ok()?;
    let duration = match codec {
        // The edit starts at the first picture (its composition offset, B-frames). Whether
        // ffmpeg measures the edit from the first packet's dts or from its own start must not
        // change the answer.
        Codec::Video(_) => {
            let (a, b) = (d0.min(m.checked_add(seg)?), d0.min(seg));
            if *media_time != first_cts || a != b {
                return None;
            }
            a
        }
        // Priming samples: ffmpeg keeps packets from the one at `m` on; only a packet
        // boundary is certain.
        Codec::Audio(_) => {
            if first_cts != 0 || !is_sample_boundary(&deltas, m) {
                return None;
            }
            d0.min(seg)
        }
    };
    if duration == 0 {
        return None;
    }
    let duration = Some(printed_seconds(duration, ts)?);
    Some(match codec {
        Codec::Video(v) => {
            // avg_frame_rate: frames × timescale / sum of stts, reduced within INT_MAX.
            let (n, d) = reduce(u128::from(ts) * u128::from(frames), u128::from(stts_sum));
            if n == 0 || n > i32::MAX as u128 || d > i32::MAX as u128 {
                return None;
            }
            StreamInfo {
                index,
                kind: StreamKind::Video,
                codec: "h264".into(),
                width: Some(v.width),
                height: Some(v.height),
                frame_rate: Some(n as f64 / d as f64),
                rotation,
                pix_fmt: Some(if v.full_range { "yuvj420p" } else { "yuv420p" }.into()),
                channels: None,
                sample_rate: None,
                duration,
                attached_pic: false,
                field_order: FieldOrder::Progressive,
                language,
                title: None,
            }
        }
        Codec::Audio(a) => {
            if rotation != 0 {
                return None;
            }
            StreamInfo {
                index,
                kind: StreamKind::Audio,
                codec: "aac".into(),
                width: None,
                height: None,
                frame_rate: None,
                rotation: 0,
                pix_fmt: None,
                channels: Some(a.channels),
                sample_rate: Some(a.sample_rate),
                duration,
                attached_pic: false,
                field_order: FieldOrder::Unknown,
                language,
                title: None,
            }
        }
    })
}

/// `Some` when every child is one of `types` (or padding).
fn known(kids: &[(FourCc, &[u8])], types: &[&FourCc]) -> Option<()> {
    kids.iter()
        .all(|(t, _)| types.contains(&t) || t == b"free" || t == b"skip")
        .then_some(())
}

fn reduce(mut n: u128, mut d: u128) -> (u128, u128) {
    let (mut a, mut b) = (n, d);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    if a > 1 {
        n /= a;
        d /= a;
    }
    (n, d)
}

fn is_sample_boundary(deltas: &[(u64, u64)], m: u64) -> bool {
    let mut t = 0u64;
    for &(count, delta) in deltas {
        if delta == 0 {
            continue;
        }
        let end = t.saturating_add(count.saturating_mul(delta));
        if m <= end {
            return (m - t).is_multiple_of(delta);
        }
        t = end;
    }
    false
}

/// One edit list entry (segment duration in movie timescale, media time); rate must be 1.
fn parse_elst(p: &[u8]) -> Option<Vec<(u64, i64)>> {
    let version = *p.first()?;
    let entry = if version == 1 { 20 } else { 12 };
    let (_, t) = table(p, entry)?;
    let mut out = Vec::new();
    for e in t.chunks_exact(entry) {
        let (seg, mt, rate) = if version == 1 {
            (be_u64(e, 0)?, be_u64(e, 8)? as i64, be_u32(e, 16)?)
        } else if version == 0 {
            (
                u64::from(be_u32(e, 0)?),
                i64::from(be_u32(e, 4)? as i32),
                be_u32(e, 8)?,
            )
        } else {
            return None;
        };
        if rate != 0x0001_0000 || seg == 0 || mt < 0 {
            return None; // empty edits, dwells, other rates
        }
        out.push((seg, mt));
    }
    Some(out)
}

/// The mdhd language as ffmpeg tags it: three packed letters (ffmpeg 5.1 keeps "und"), or
/// none for QuickTime's 0x7fff; `None` (not sure) for anything else.
fn language(code: u16) -> Option<Option<String>> {
    if code == 0x7fff {
        return Some(None); // QuickTime's "unspecified": no tag
    }
    if code < 0x400 {
        return None; // Macintosh language codes
    }
    let s: String = [10u16, 5, 0]
        .iter()
        .map(|sh| char::from(0x60 + ((code >> sh) & 0x1f) as u8))
        .collect();
    s.chars().all(|c| c.is_ascii_lowercase()).then_some(Some(s))
}

/// The media must be in this file: one self-contained data reference.
fn check_dref(dinf: &[u8], budget: &mut usize) -> Option<()> {
    let dinf = children(dinf, budget)?;
    let dref = only(&dinf, b"dref")?;
    if be_u32(dref, 4)? != 1 {
        return None;
    }
    let entries = children(dref.get(8..)?, budget)?;
    match entries.as_slice() {
        [(t, body)] if (t == b"url " || t == b"alis") && be_u32(body, 0)? & 1 == 1 => Some(()),
        _ => None,
    }
}

fn parse_stsd(stsd: &[u8], budget: &mut usize) -> Option<Codec> {
    if be_u32(stsd, 4)? != 1 {
        return None;
    }
    let entries = children(stsd.get(8..)?, budget)?;
    let [(typ, body)] = entries.as_slice() else {
        return None;
    };
    match typ {
        b"avc1" | b"avc3" => {
            let kids = children(body.get(78..)?, budget)?;
            if kids
                .iter()
                .any(|(t, _)| !matches!(t, b"avcC" | b"pasp" | b"btrt" | b"colr"))
            {
                return None; // fiel (field order), clap, ...
            }
            let v = avc::parse_avcc(only(&kids, b"avcC")?)?;
            // Without a range in the SPS, a colr box's range flag would decide the pix_fmt.
            if kids.iter().any(|(t, _)| t == b"colr") && !v.signals_range {
                return None;
            }
            Some(Codec::Video(v))
        }
        b"mp4a" => {
            // QuickTime's sound description v1 adds four 32-bit fields; v2 is another layout.
            let children_at = match be_u16(body, 8)? {
                0 => 28,
                1 => 44,
                _ => return None,
            };
            // ffmpeg writes channelcount 2 even for mono: the decoder's count comes from the
            // AudioSpecificConfig, so only the sample rate is cross-checked.
            let rate = be_u32(body, 24)? >> 16;
            let kids = children(body.get(children_at..)?, budget)?;
            if kids
                .iter()
                .any(|(t, _)| !matches!(t, b"esds" | b"btrt" | b"wave" | b"chan"))
            {
                return None;
            }
            let esds = match (only(&kids, b"esds"), only(&kids, b"wave")) {
                (Some(esds), None) => esds,
                // QuickTime wraps the esds in a wave box (frma, mp4a, esds, terminator).
                (None, Some(wave)) => {
                    let inner = children(wave, budget)?;
                    if inner
                        .iter()
                        .any(|(t, _)| !matches!(t, b"frma" | b"mp4a" | b"esds" | [0, 0, 0, 0]))
                    {
                        return None;
                    }
                    only(&inner, b"esds")?
                }
                _ => return None,
            };
            let a = aac::parse_esds(esds)?;
            // QuickTime's channel layout (ffmpeg writes it for .mov): only a plain layout tag
            // whose count agrees with the AudioSpecificConfig's.
            if kids.iter().any(|(t, _)| t == b"chan") {
                let chan = only(&kids, b"chan")?;
                let tag = be_u32(chan, 4)?;
                let plain = tag >> 16 >= 100 && be_u32(chan, 12)? == 0;
                if !plain || tag & 0xffff != a.channels {
                    return None;
                }
            }
            (a.sample_rate == rate).then_some(Codec::Audio(a))
        }
        _ => None,
    }
}
