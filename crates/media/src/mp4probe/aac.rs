//! An `esds` box's AAC AudioSpecificConfig, read only as far as ffprobe's channels and sample
//! rate are certain: AAC-LC, a standard channel configuration, and no SBR that could double the
//! decoder's output rate (explicitly signalled off, or a core rate above 24 kHz where implicit
//! SBR cannot apply).

use super::bits::Bits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Aac {
    pub channels: u32,
    pub sample_rate: u32,
}

const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Parses an `esds` payload (after the box header): version/flags, then the ES descriptor.
pub(crate) fn parse_esds(p: &[u8]) -> Option<Aac> {
    let mut d = p.get(4..)?;
    let es = descriptor(&mut d, 0x03)?;
    let flags = *es.get(2)?;
    let mut rest = es.get(3..)?;
    if flags & 0x80 != 0 {
        rest = rest.get(2..)?;
    }
    if flags & 0x40 != 0 {
        let n = usize::from(*rest.first()?);
        rest = rest.get(1 + n..)?;
    }
    if flags & 0x20 != 0 {
        rest = rest.get(2..)?;
    }
    let dc = descriptor(&mut rest, 0x04)?;
    if *dc.first()? != 0x40 {
        return None; // MPEG-4 audio only (not MPEG-2 AAC, not MP3)
    }
    let mut after = dc.get(13..)?;
    let asc = descriptor(&mut after, 0x05)?;
    parse_asc(asc)
}

/// Reads one descriptor with the expected tag and its (up to 4-byte) expandable length,
/// advancing `d` past it.
fn descriptor<'a>(d: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    if *d.first()? != tag {
        return None;
    }
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let b = *d.get(i)?;
        len = (len << 7) | usize::from(b & 0x7f);
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return None;
        }
    }
    let body = d.get(i..i.checked_add(len)?)?;
    *d = d.get(i + len..)?;
    Some(body)
}

pub(crate) fn parse_asc(asc: &[u8]) -> Option<Aac> {
    let mut b = Bits::new(asc);
    if b.bits(5)? != 2 {
        return None; // not AAC-LC
    }
    let sample_rate = match b.bits(4)? {
        15 => b.bits(24)?,
        i => *RATES.get(usize::try_from(i).ok()?)?,
    };
    let channels = match b.bits(4)? {
        c @ 1..=6 => c,
        7 => 8,
        _ => return None, // program config element or reserved
    };
    // GASpecificConfig: 1024-sample frames, no core coder, no extension.
    if b.bits(3)? != 0 {
        return None;
    }
    let after_ga = b.clone();
    let explicit_no_sbr =
        b.remaining() >= 17 && b.bits(11)? == 0x2b7 && b.bits(5)? == 5 && !b.flag()?;
    if !explicit_no_sbr {
        // Whatever follows must be padding, and implicit SBR must be impossible.
        let mut pad = after_ga;
        while pad.remaining() > 0 {
            if pad.bit()? != 0 {
                return None;
            }
        }
        if sample_rate <= 24000 {
            return None;
        }
    }
    if sample_rate == 0 {
        return None;
    }
    Some(Aac {
        channels,
        sample_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_configs() {
        // LC, 44.1 kHz, stereo, no extension: 00010 0100 0010 000
        assert_eq!(
            parse_asc(&[0x12, 0x10]),
            Some(Aac {
                channels: 2,
                sample_rate: 44100
            })
        );
        // ffmpeg's encoder at 22.05 kHz mono signals "no SBR" explicitly: 0x2b7, AOT 5, 0.
        assert_eq!(
            parse_asc(&[0x13, 0x88, 0x56, 0xe5, 0x00]),
            Some(Aac {
                channels: 1,
                sample_rate: 22050
            })
        );
        // The same rate without the signal could be implicit HE-AAC: not sure.
        assert_eq!(parse_asc(&[0x13, 0x88]), None);
        // HE-AAC (AOT 5), PCE channel config, truncated.
        assert_eq!(parse_asc(&[0x2b, 0x92, 0x08, 0x00]), None);
        assert_eq!(parse_asc(&[0x12, 0x00]), None);
        assert_eq!(parse_asc(&[0x12]), None);
    }
}
