//! What ffprobe reports of an H.264 stream that can be read from its `avcC` SPS alone: the
//! cropped picture size, the pixel format and the scan. Anything the decoder could report
//! differently (4:2:2/4:4:4, high bit depth, interlacing, left/top cropping ffmpeg realigns,
//! picture-structure SEI, more than one SPS) is `None`: "not sure", ffprobe decides.

use super::bits::{unescape, Bits};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Avc {
    pub width: u32,
    pub height: u32,
    pub full_range: bool,
    /// The SPS says whether the range is full; without that a `colr` box would decide.
    pub signals_range: bool,
}

/// Parses an `avcC` (AVCDecoderConfigurationRecord) payload.
pub(crate) fn parse_avcc(p: &[u8]) -> Option<Avc> {
    if *p.first()? != 1 {
        return None;
    }
    let num_sps = p.get(5)? & 0x1f;
    if num_sps != 1 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*p.get(6)?, *p.get(7)?]));
    let nal = p.get(8..8usize.checked_add(len)?)?;
    parse_sps(nal)
}

const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Parses a sequence parameter set NAL unit (with its one-byte NAL header).
pub(crate) fn parse_sps(nal: &[u8]) -> Option<Avc> {
    if nal.first()? & 0x1f != 7 {
        return None;
    }
    let rbsp = unescape(nal.get(1..)?);
    let mut b = Bits::new(&rbsp);
    let profile = b.bits(8)?;
    b.bits(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    if HIGH_PROFILES.contains(&profile) {
        let chroma = b.ue()?;
        if chroma != 1 {
            return None; // 4:0:0, 4:2:2, 4:4:4
        }
        if b.ue()? != 0 || b.ue()? != 0 {
            return None; // bit depth above 8
        }
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.flag()? {
            skip_scaling_lists(&mut b, 8)?;
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?;
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            let n = b.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                b.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let mbs_w = u64::from(b.ue()?) + 1;
    let mbs_h = u64::from(b.ue()?) + 1;
    if !b.flag()? {
        return None; // frame_mbs_only_flag = 0: interlaced or MBAFF
    }
    b.bit()?; // direct_8x8_inference_flag
    let (mut crop_r, mut crop_b) = (0u64, 0u64);
    if b.flag()? {
        let (l, r, t, bo) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        if l != 0 || t != 0 {
            return None; // ffmpeg may realign left/top crops; leave those to it
        }
        (crop_r, crop_b) = (u64::from(r), u64::from(bo));
    }
    // 4:2:0 progressive: crop units are 2 luma samples both ways.
    let width = (mbs_w * 16).checked_sub(2 * crop_r)?;
    let height = (mbs_h * 16).checked_sub(2 * crop_b)?;
    if width == 0 || height == 0 || width > 16384 || height > 16384 {
        return None;
    }
    let (mut full_range, mut signals_range) = (false, false);
    if b.flag()? {
        let vui = parse_vui(&mut b)?;
        full_range = vui.0;
        signals_range = vui.1;
    }
    Some(Avc {
        width: u32::try_from(width).ok()?,
        height: u32::try_from(height).ok()?,
        full_range,
        signals_range,
    })
}

fn skip_scaling_lists(b: &mut Bits, count: usize) -> Option<()> {
    for i in 0..count {
        if !b.flag()? {
            continue;
        }
        let size = if i < 6 { 16 } else { 64 };
        let (mut last, mut next) = (8i64, 8i64);
        for _ in 0..size {
            if next != 0 {
                let delta = b.se()?;
                if !(-128..=127).contains(&delta) {
                    return None;
                }
                next = (last + delta + 256) % 256;
            }
            if next != 0 {
                last = next;
            }
        }
    }
    Some(())
}

/// (full range, range signalled). Reads the VUI up to `pic_struct_present_flag`, because
/// picture-timing SEI can make ffmpeg report a field order the SPS alone does not show.
fn parse_vui(b: &mut Bits) -> Option<(bool, bool)> {
    if b.flag()? && b.bits(8)? == 255 {
        b.bits(32)?; // sar_width, sar_height
    }
    if b.flag()? {
        b.bit()?; // overscan_appropriate_flag
    }
    let (mut full, mut signalled) = (false, false);
    if b.flag()? {
        b.bits(3)?; // video_format
        full = b.flag()?;
        signalled = true;
        if b.flag()? {
            b.bits(24)?; // colour primaries, transfer, matrix
        }
    }
    if b.flag()? {
        b.ue()?;
        b.ue()?; // chroma sample locations
    }
    if b.flag()? {
        b.bits(32)?;
        b.bits(32)?;
        b.bit()?; // timing info
    }
    let nal_hrd = b.flag()?;
    if nal_hrd {
        skip_hrd(b)?;
    }
    let vcl_hrd = b.flag()?;
    if vcl_hrd {
        skip_hrd(b)?;
    }
    if nal_hrd || vcl_hrd {
        b.bit()?; // low_delay_hrd_flag
    }
    if b.flag()? {
        return None; // pic_struct_present_flag
    }
    Some((full, signalled))
}

fn skip_hrd(b: &mut Bits) -> Option<()> {
    let cpb = b.ue()?;
    if cpb > 31 {
        return None;
    }
    b.bits(8)?;
    for _ in 0..=cpb {
        b.ue()?;
        b.ue()?;
        b.bit()?;
    }
    b.bits(20)?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_foreign_nal_is_not_an_sps() {
        assert_eq!(parse_sps(&[]), None);
        assert_eq!(parse_sps(&[0x68, 0xee]), None); // a PPS
        assert_eq!(parse_sps(&[0x67, 100]), None);
        assert_eq!(parse_avcc(&[1, 100, 0, 30, 0xff, 0xe2]), None); // two SPS
        assert_eq!(parse_avcc(&[1, 100, 0, 30, 0xff, 0xe1, 0, 40, 0x67]), None);
    }
}
