//! ISO-BMFF boxes as bounds-checked slices. A box whose length is smaller than its header or
//! runs past its parent, and a parent with more children than the budget allows, make the
//! whole parse `None`; nothing here indexes without `get`.

pub(crate) type FourCc = [u8; 4];

/// The children of a box payload, in order. `budget` is shared by the whole parse so a moov
/// made of millions of tiny boxes stops early.
pub(crate) fn children<'a>(data: &'a [u8], budget: &mut usize) -> Option<Vec<(FourCc, &'a [u8])>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        *budget = budget.checked_sub(1)?;
        let rest = data.get(pos..)?;
        let size32 = be_u32(rest, 0)?;
        let typ: FourCc = rest.get(4..8)?.try_into().ok()?;
        let (len, hdr) = match size32 {
            0 => (rest.len(), 8),
            1 => (usize::try_from(be_u64(rest, 8)?).ok()?, 16),
            n => (usize::try_from(n).ok()?, 8),
        };
        if len < hdr {
            return None;
        }
        out.push((typ, rest.get(hdr..len)?));
        pos = pos.checked_add(len)?;
    }
    Some(out)
}

/// The one child of that type; `None` when absent or repeated.
pub(crate) fn only<'a>(kids: &[(FourCc, &'a [u8])], typ: &FourCc) -> Option<&'a [u8]> {
    let mut found = kids.iter().filter(|(t, _)| t == typ);
    let first = found.next()?.1;
    found.next().is_none().then_some(first)
}

pub(crate) fn be_u16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        p.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn be_u32(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        p.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn be_u64(p: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        p.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A full box's table: `count` fixed-size entries after version/flags and the count, all of
/// which must fit in the payload.
pub(crate) fn table(p: &[u8], entry: usize) -> Option<(u8, &[u8])> {
    let version = *p.first()?;
    let count = usize::try_from(be_u32(p, 4)?).ok()?;
    let bytes = count.checked_mul(entry)?;
    Some((version, p.get(8..8usize.checked_add(bytes)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_box_sizes_are_refused() {
        let mut budget = 100;
        // size 4 < header, size past the end, 64-bit size past the end
        assert!(children(&[0, 0, 0, 4, b'f', b'r', b'e', b'e'], &mut budget).is_none());
        assert!(children(&[0, 0, 0, 9, b'f', b'r', b'e', b'e'], &mut budget).is_none());
        let mut big = vec![0, 0, 0, 1, b'f', b'r', b'e', b'e'];
        big.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(children(&big, &mut budget).is_none());
        // size 0 runs to the end of the parent
        let kids = children(&[0, 0, 0, 0, b'f', b'r', b'e', b'e', 7], &mut budget).unwrap();
        assert_eq!(kids, vec![(*b"free", &[7u8][..])]);
        // the budget stops a flood of empty boxes
        let flood: Vec<u8> = (0..1000)
            .flat_map(|_| [0, 0, 0, 8, b'f', b'r', b'e', b'e'])
            .collect();
        let mut small = 10;
        assert!(children(&flood, &mut small).is_none());
        assert!(table(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], 8).is_none());
    }
}
