//! Annex-B byte streams (H.264 and H.265): NAL units after start codes, splitting an unframed
//! stream into access units, and RBSP escaping.

mod splitter;

pub use splitter::{AccessUnit, AccessUnitSplitter, VideoCodec};

use bytes::{BufMut, Bytes, BytesMut};

/// The 4-byte start code mediamesh writes before every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Iterates the NAL units of an Annex-B buffer (start codes of 3 or 4 bytes), without their
/// start codes and trailing zero bytes. Bytes before the first start code are ignored.
pub fn nals(data: &[u8]) -> Nals<'_> {
    let pos = find_start_code(data, 0).map(|(_, end)| end).unwrap_or(data.len());
    Nals { data, pos }
}

/// Iterator returned by [`nals`].
#[derive(Debug, Clone)]
pub struct Nals<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Nals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.pos < self.data.len() {
            let start = self.pos;
            let (end, next) = match find_start_code(self.data, start) {
                Some((sc, after)) => (sc, after),
                None => (self.data.len(), self.data.len()),
            };
            self.pos = next;
            let nal = trim_trailing_zeros(&self.data[start..end]);
            if !nal.is_empty() {
                return Some(nal);
            }
        }
        None
    }
}

/// Finds the next 3-byte start code at or after `from`: returns (its position, the position
/// just after it).
pub(crate) fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        // Fast skip: a start code needs data[i + 2] == 1 and two zeros before it.
        match data[i + 2] {
            1 if data[i] == 0 && data[i + 1] == 0 => return Some((i, i + 3)),
            0 => i += 1,
            _ => i += 3,
        }
    }
    None
}

pub(crate) fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &nal[..end]
}

/// Writes NAL units (without start codes) as Annex-B, each after [`START_CODE`].
pub fn to_annex_b<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    for n in nals {
        out.put_slice(&START_CODE);
        out.put_slice(n);
    }
    out.freeze()
}

/// Inserts emulation-prevention bytes so an RBSP can be carried in a NAL unit.
pub fn escape_rbsp(rbsp: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// Removes emulation-prevention bytes from a NAL unit body (after its header byte).
pub fn unescape_rbsp(ebsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ebsp.len());
    let mut zeros = 0;
    for &b in ebsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_nals_with_3_and_4_byte_start_codes() {
        let data = b"junk\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x00\x01\x65\xcc\xdd";
        let v: Vec<&[u8]> = nals(data).collect();
        assert_eq!(v, vec![&b"\x67\xaa"[..], &b"\x68\xbb"[..], &b"\x65\xcc\xdd"[..]]);
        assert_eq!(nals(b"\x67\x42").count(), 0);
        assert_eq!(nals(b"").count(), 0);
    }
}
