//! RFC 6381 codecs strings (`avc1.64001f`, `hvc1.1.6.L93.B0`, `av01.0.04M.08`, `mp4a.40.2`)
//! read from an fMP4 init segment's sample descriptions. Players pick a rung by these strings
//! (`MediaSource.isTypeSupported`), and this ffmpeg writes some of them incompletely (a bare
//! `hvc1` in the MPD, no `CODECS` at all for AV1 in HLS), so reelay derives them from the bytes
//! it wrote. Pure: bytes in, strings out.

/// Children of an MP4 box payload: `(type, payload)` pairs; stops at the first malformed box.
fn boxes(mut data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = vec![];
    while data.len() >= 8 {
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = [data[4], data[5], data[6], data[7]];
        let (header, size) = match size {
            1 if data.len() >= 16 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[8..16]);
                (16, u64::from_be_bytes(b) as usize)
            }
            0 => (8, data.len()),
            n => (8, n),
        };
        if size < header || size > data.len() {
            break;
        }
        out.push((kind, &data[header..size]));
        data = &data[size..];
    }
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, p)| p)
}

/// Codecs strings of every track in an init segment, in track order.
pub fn from_init_segment(init: &[u8]) -> Vec<String> {
    let Some(moov) = child(init, b"moov") else {
        return vec![];
    };
    boxes(moov)
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .filter_map(|(_, trak)| {
            let stbl = [b"mdia", b"minf", b"stbl"]
                .iter()
                .try_fold(trak, |d, k| child(d, k))?;
            let stsd = child(stbl, b"stsd")?;
            // Full box header (4) and entry count (4), then the first sample entry.
            let (kind, entry) = boxes(stsd.get(8..)?).into_iter().next()?;
            sample_entry(&kind, entry)
        })
        .collect()
}

fn sample_entry(kind: &[u8; 4], entry: &[u8]) -> Option<String> {
    let fourcc = std::str::from_utf8(kind).ok()?;
    match kind {
        // Visual sample entries: 78 bytes of fields before the child boxes.
        b"avc1" | b"avc3" => {
            let c = child(entry.get(78..)?, b"avcC")?;
            Some(format!(
                "{fourcc}.{:02x}{:02x}{:02x}",
                c.get(1)?,
                c.get(2)?,
                c.get(3)?
            ))
        }
        b"hvc1" | b"hev1" => hevc(fourcc, child(entry.get(78..)?, b"hvcC")?),
        b"av01" => av1(child(entry.get(78..)?, b"av1C")?),
        // Audio sample entries: 28 bytes of fields.
        b"mp4a" => Some(mp4a(child(entry.get(28..)?, b"esds")?)),
        b"Opus" => Some("opus".into()),
        _ => None,
    }
}

/// ISO/IEC 14496-15 annex E: profile space and IDC, compatibility flags bit-reversed in hex,
/// tier and level, then the constraint bytes without trailing zero bytes.
fn hevc(fourcc: &str, c: &[u8]) -> Option<String> {
    let b1 = *c.get(1)?;
    let space = ["", "A", "B", "C"][(b1 >> 6) as usize];
    let tier = if b1 & 0x20 != 0 { 'H' } else { 'L' };
    let profile = b1 & 0x1f;
    let compat = u32::from_be_bytes(c.get(2..6)?.try_into().ok()?).reverse_bits();
    let level = c.get(12)?;
    let mut constraints: Vec<u8> = c.get(6..12)?.to_vec();
    while constraints.last() == Some(&0) {
        constraints.pop();
    }
    let mut s = format!("{fourcc}.{space}{profile}.{compat:X}.{tier}{level}");
    for b in constraints {
        s.push_str(&format!(".{b:X}"));
    }
    Some(s)
}

/// AV1 codec ISO media file format binding, "Codecs Parameter String": profile, level with
/// tier, bit depth.
fn av1(c: &[u8]) -> Option<String> {
    let (b1, b2) = (*c.get(1)?, *c.get(2)?);
    let profile = b1 >> 5;
    let level = b1 & 0x1f;
    let tier = if b2 & 0x80 != 0 { 'H' } else { 'M' };
    let depth = match (b2 & 0x40 != 0, b2 & 0x20 != 0) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    Some(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

/// `mp4a.<object type indication in hex>.<audio object type>` from the ES descriptor; AAC-LC
/// (`mp4a.40.2`, what reelay encodes) when the descriptor cannot be read.
fn mp4a(esds: &[u8]) -> String {
    fn descriptor(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *d.first()?;
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = *d.get(i)?;
            len = (len << 7) | (b & 0x7f) as usize;
            i += 1;
            if b & 0x80 == 0 || i > 4 {
                break;
            }
        }
        let body = d.get(i..i + len)?;
        Some((tag, body, &d[i + len..]))
    }
    let parse = || -> Option<String> {
        let (tag, es, _) = descriptor(esds.get(4..)?)?;
        if tag != 3 {
            return None;
        }
        let flags = *es.get(2)?;
        let mut rest = es.get(3..)?;
        if flags & 0x80 != 0 {
            rest = rest.get(2..)?;
        }
        if flags & 0x40 != 0 {
            rest = rest.get(1 + *rest.first()? as usize..)?;
        }
        if flags & 0x20 != 0 {
            rest = rest.get(2..)?;
        }
        let (tag, dc, _) = descriptor(rest)?;
        if tag != 4 {
            return None;
        }
        let oti = *dc.first()?;
        let aot = match descriptor(dc.get(13..)?) {
            Some((5, dsi, _)) => dsi.first().map(|b| b >> 3),
            _ => None,
        };
        Some(match aot {
            Some(aot) => format!("mp4a.{oti:x}.{aot}"),
            None => format!("mp4a.{oti:x}"),
        })
    };
    parse().unwrap_or_else(|| "mp4a.40.2".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn init_with(entry: Vec<u8>) -> Vec<u8> {
        let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1];
        stsd.extend(entry);
        let stbl = bx(b"stbl", &bx(b"stsd", &stsd));
        let trak = bx(b"trak", &bx(b"mdia", &bx(b"minf", &stbl)));
        let mut out = bx(b"ftyp", b"iso6");
        out.extend(bx(b"moov", &trak));
        out
    }

    fn visual(kind: &[u8; 4], config_kind: &[u8; 4], config: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 78];
        e.extend(bx(config_kind, config));
        bx(kind, &e)
    }

    #[test]
    fn h264_is_profile_compat_level_in_hex() {
        let init = init_with(visual(b"avc1", b"avcC", &[1, 0x64, 0x00, 0x1f, 0xff]));
        assert_eq!(from_init_segment(&init), vec!["avc1.64001f"]);
    }

    /// HEVC Main, level 3.1 (93), main tier: compatibility flags 0x60000000 read reversed.
    #[test]
    fn hevc_main_gives_the_rfc_6381_form() {
        let mut c = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
        c.extend([0xf0, 0, 0xfc]);
        let init = init_with(visual(b"hvc1", b"hvcC", &c));
        assert_eq!(from_init_segment(&init), vec!["hvc1.1.6.L93.90"]);
    }

    /// AV1 main profile, level 4.0 (seq_level_idx 8), main tier, 8 bit.
    #[test]
    fn av1_gives_profile_level_tier_depth() {
        let init = init_with(visual(b"av01", b"av1C", &[0x81, 0x08, 0x0c, 0]));
        assert_eq!(from_init_segment(&init), vec!["av01.0.08M.08"]);
        let ten_bit = init_with(visual(b"av01", b"av1C", &[0x81, 0x08, 0x4c, 0]));
        assert_eq!(from_init_segment(&ten_bit), vec!["av01.0.08M.10"]);
    }

    #[test]
    fn aac_lc_is_read_from_the_es_descriptor() {
        // ES_Descriptor { id, flags 0, DecoderConfig { OTI 0x40, ..., DSI { AOT 2 } } }
        let dsi = [0x05, 2, 0x11, 0x90];
        let mut dc = vec![0x04, (13 + dsi.len()) as u8, 0x40, 0x15];
        dc.extend([0u8; 11]);
        dc.extend(dsi);
        let mut es = vec![0x03, (3 + dc.len()) as u8, 0, 1, 0];
        es.extend(dc);
        let mut esds = vec![0, 0, 0, 0];
        esds.extend(es);
        let mut e = vec![0u8; 28];
        e.extend(bx(b"esds", &esds));
        let init = init_with(bx(b"mp4a", &e));
        assert_eq!(from_init_segment(&init), vec!["mp4a.40.2"]);
    }

    #[test]
    fn garbage_gives_nothing_and_never_panics() {
        assert!(from_init_segment(b"").is_empty());
        assert!(from_init_segment(&[0xff; 64]).is_empty());
        let mut truncated = init_with(visual(b"hvc1", b"hvcC", &[1, 2, 3]));
        assert!(from_init_segment(&truncated).is_empty());
        truncated.truncate(20);
        assert!(from_init_segment(&truncated).is_empty());
    }
}
