//! The video track's keyframes read from `moov` (`stss`, `stts`, `ctts`, `elst`) instead of
//! by demuxing the whole file: the `split` task needs them before it cuts, and an ffprobe
//! packet scan reads every byte of the input for them (12 GB for ten minutes of a
//! 164 Mb/s upload) while the answer sits in a few hundred kilobytes of sample tables.
//!
//! Same contract as the probe: the answer is exactly what ffprobe's packet report would give
//! (`-select_streams v:0 -show_entries packet=pts_time,flags`: the index of each keyframe
//! among the video packets, in demux order, and its `pts_time` as printed), or `None` ("scan
//! with ffprobe"). Only files [`super::probe_reader`] fully understands are answered, which
//! already pins the single edit to the first picture's composition offset, non-negative
//! composition offsets and one video track; a file without `stss` (every sample a keyframe)
//! is left to ffprobe.

use super::boxes::{be_u32, children, only, table};
use super::{parse_elst, scan_top_level, MAX_BOXES};
use std::io::{Read, Seek};
use std::path::Path;

/// The keyframes of the first video track.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyframes {
    /// Video packets (samples) in the track.
    pub packets: usize,
    /// (packet index, `pts_time` in the file's own timestamps) of each keyframe, in order.
    pub keys: Vec<(usize, f64)>,
}

/// Reads the keyframes of a file on disk; `None` means "scan with ffprobe".
pub fn keyframes_file(path: &Path) -> Option<Keyframes> {
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    keyframes_reader(&mut f, size)
}

/// Reads the keyframes of `size` bytes of a seekable source.
pub fn keyframes_reader<R: Read + Seek>(r: &mut R, size: u64) -> Option<Keyframes> {
    let top = scan_top_level(r, size)?;
    // Everything the probe would refuse is refused here too: it checks the edit against the
    // composition offsets, the sample counts against each other and the chunks against `mdat`.
    super::parse_movie(&top.moov, size, &top.mdats)?;
    let mut budget = MAX_BOXES;
    let kids = children(&top.moov, &mut budget)?;
    let mut videos = kids
        .iter()
        .filter(|(t, _)| t == b"trak")
        .filter_map(|(_, trak)| video_tables(trak, &mut budget));
    let v = videos.next()?;
    v.keyframes()
}

/// What the keyframe times are computed from.
struct Tables<'a> {
    timescale: u32,
    /// Media time of the track's single edit (ffmpeg shifts every timestamp back by it).
    edit: i64,
    stts: &'a [u8],
    ctts: Option<&'a [u8]>,
    stss: &'a [u8],
}

fn video_tables<'a>(trak: &'a [u8], budget: &mut usize) -> Option<Tables<'a>> {
    let kids = children(trak, budget)?;
    let mdia = children(only(&kids, b"mdia")?, budget)?;
    let handler = only(&mdia, b"hdlr")?.get(8..12)?;
    if handler != b"vide" {
        return None;
    }
    let mdhd = only(&mdia, b"mdhd")?;
    let timescale = match *mdhd.first()? {
        0 => be_u32(mdhd, 12)?,
        1 => be_u32(mdhd, 20)?,
        _ => return None,
    };
    let edts = children(only(&kids, b"edts")?, budget)?;
    let [(_, edit)] = parse_elst(only(&edts, b"elst")?)?[..] else {
        return None;
    };
    let minf = children(only(&mdia, b"minf")?, budget)?;
    let stbl = children(only(&minf, b"stbl")?, budget)?;
    Some(Tables {
        timescale,
        edit,
        stts: table(only(&stbl, b"stts")?, 8)?.1,
        ctts: match stbl.iter().filter(|(t, _)| t == b"ctts").count() {
            0 => None,
            _ => Some(table(only(&stbl, b"ctts")?, 8)?.1),
        },
        stss: table(only(&stbl, b"stss")?, 4)?.1,
    })
}

impl Tables<'_> {
    fn keyframes(&self) -> Option<Keyframes> {
        let dts = run_lengths(self.stts)?;
        let cts = match self.ctts {
            Some(c) => Some(run_lengths(c)?),
            None => None,
        };
        let packets = dts.iter().try_fold(0u64, |n, (c, _)| n.checked_add(*c))?;
        let mut keys = Vec::with_capacity(self.stss.len() / 4);
        // Walks both run-length tables once, in step with the ascending keyframe numbers:
        // `t` is the decode time of sample `at`, the first of `dts[d]`'s run being `d_first`.
        let (mut d, mut d_first, mut t) = (0usize, 0u64, 0i64);
        let (mut c, mut c_first) = (0usize, 0u64);
        let mut prev = 0u32;
        for e in self.stss.chunks_exact(4) {
            let n = be_u32(e, 0)?;
            if n <= prev || u64::from(n) > packets {
                return None; // not ascending, or past the last sample
            }
            prev = n;
            let target = u64::from(n - 1);
            while target >= d_first + dts.get(d)?.0 {
                let (count, delta) = dts[d];
                t = t.checked_add(i64::try_from(count.checked_mul(delta)?).ok()?)?;
                d_first += count;
                d += 1;
            }
            let within = i64::try_from((target - d_first).checked_mul(dts[d].1)?).ok()?;
            let offset = match &cts {
                Some(cts) => {
                    while target >= c_first + cts.get(c)?.0 {
                        c_first += cts[c].0;
                        c += 1;
                    }
                    i64::from(cts[c].1 as u32 as i32)
                }
                None => 0,
            };
            let pts = t
                .checked_add(within)?
                .checked_add(offset)?
                .checked_sub(self.edit)?;
            keys.push((usize::try_from(target).ok()?, printed(pts, self.timescale)?));
        }
        Some(Keyframes {
            packets: usize::try_from(packets).ok()?,
            keys,
        })
    }
}

/// `(count, value)` entries of `stts` or `ctts`, empty runs dropped; a `ctts` offset is read
/// as signed by the caller, though the probe has already refused negative ones.
fn run_lengths(t: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::with_capacity(t.len() / 8);
    for e in t.chunks_exact(8) {
        let (count, value) = (u64::from(be_u32(e, 0)?), u64::from(be_u32(e, 4)?));
        if count > 0 {
            out.push((count, value));
        }
    }
    Some(out)
}

/// A time as ffprobe prints it (`%f` of ts × 1/timescale) and the scan parses it back; `None`
/// for a negative time (ffmpeg would have shifted it).
fn printed(ts: i64, timescale: u32) -> Option<f64> {
    if ts < 0 || timescale == 0 {
        return None;
    }
    let s = ts as f64 * (1.0 / f64::from(timescale));
    format!("{s:.6}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(v: &[(u32, u32)]) -> Vec<u8> {
        v.iter()
            .flat_map(|(a, b)| a.to_be_bytes().into_iter().chain(b.to_be_bytes()))
            .collect()
    }

    fn numbers(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|n| n.to_be_bytes()).collect()
    }

    fn tables<'a>(edit: i64, stts: &'a [u8], ctts: Option<&'a [u8]>, stss: &'a [u8]) -> Tables<'a> {
        Tables {
            timescale: 15360,
            edit,
            stts,
            ctts,
            stss,
        }
    }

    #[test]
    fn keyframe_times_follow_the_tables_and_the_edit() {
        // 10 samples of 512 ticks at 15360 a second (30 fps); B-frame offsets of 1024 then 0;
        // keyframes 1, 5 and 9; the edit shifts everything back by the first offset.
        let stts = entries(&[(10, 512)]);
        let ctts = entries(&[(1, 1024), (3, 0), (1, 1024), (5, 0)]);
        let stss = numbers(&[1, 5, 9]);
        let k = tables(1024, &stts, Some(&ctts), &stss).keyframes().unwrap();
        assert_eq!(k.packets, 10);
        assert_eq!(k.keys, vec![(0, 0.0), (4, 0.133333), (8, 0.2)]);
    }

    #[test]
    fn tables_that_do_not_add_up_are_refused() {
        let stts = entries(&[(4, 512)]);
        // Keyframe numbers out of order, and one past the last sample.
        for stss in [numbers(&[1, 3, 2]), numbers(&[1, 5])] {
            assert_eq!(tables(0, &stts, None, &stss).keyframes(), None);
        }
        // A composition table shorter than the samples it is asked about.
        let ctts = entries(&[(1, 0)]);
        let stss = numbers(&[1, 3]);
        assert_eq!(tables(0, &stts, Some(&ctts), &stss).keyframes(), None);
        // An edit past the first picture would give a negative time.
        assert_eq!(tables(1, &stts, None, &stss).keyframes(), None);
    }
}
