//! H.264 in Annex-B form: NAL units, keyframes, parameter sets, SPS parsing.
//!
//! Payloads in mediamesh are Annex-B: every NAL unit follows a start code. [`nals`] walks them;
//! [`AccessUnitSplitter`] turns an unframed byte stream (ffmpeg's `-f h264` output) into access
//! units; [`sei`] builds and reads the SEI message the test pattern stamps on every frame.

pub mod sei;
mod splitter;

pub use splitter::{AccessUnit, AccessUnitSplitter};

use bytes::{BufMut, Bytes, BytesMut};

use crate::{MediaError, VideoParams};

/// Coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// Coded slice of an IDR picture (a keyframe).
pub const NAL_IDR: u8 = 5;
/// Supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// Picture parameter set.
pub const NAL_PPS: u8 = 8;
/// Access unit delimiter.
pub const NAL_AUD: u8 = 9;

/// The 4-byte start code mediamesh writes before every NAL unit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The `nal_unit_type` of a NAL unit (without start code), or `None` if it is empty.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Whether a NAL unit type is a coded slice (VCL).
pub fn is_vcl(nal_type: u8) -> bool {
    (1..=5).contains(&nal_type)
}

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

/// Whether an Annex-B access unit contains an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nals(access_unit).any(|n| nal_type(n) == Some(NAL_IDR))
}

/// The last SPS and PPS found in an Annex-B access unit.
pub fn parameter_sets(access_unit: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let (mut sps, mut pps) = (None, None);
    for n in nals(access_unit) {
        match nal_type(n) {
            Some(NAL_SPS) => sps = Some(n),
            Some(NAL_PPS) => pps = Some(n),
            _ => {}
        }
    }
    (sps, pps)
}

/// Parses an SPS NAL unit (without start code) into picture size and codec string.
pub fn parse_sps(sps: &[u8]) -> Result<VideoParams, MediaError> {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::rbsp::{BitReader, decode_nal};

    let invalid = |reason: String| MediaError::InvalidSps { len: sps.len(), reason };
    if sps.len() < 4 || nal_type(sps) != Some(NAL_SPS) {
        return Err(invalid("not an SPS NAL unit".into()));
    }
    let rbsp = decode_nal(sps).map_err(|e| invalid(e.to_string()))?;
    let parsed = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).map_err(|e| invalid(format!("{e:?}")))?;
    let (width, height) = parsed.pixel_dimensions().map_err(|e| invalid(format!("{e:?}")))?;
    // profile_idc, the constraint flags byte and level_idc follow the header byte verbatim.
    let codec_string = format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]);
    Ok(VideoParams { width, height, codec_string })
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
pub(crate) mod tests {
    use super::*;

    /// SPS and PPS of a 320x240 constrained-baseline stream made by libx264.
    pub(crate) const SPS_320X240: &[u8] =
        b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";
    pub(crate) const PPS_320X240: &[u8] = b"\x68\xce\x0f\xc8";

    #[test]
    fn parses_sps_dimensions() {
        let p = parse_sps(SPS_320X240).unwrap();
        assert_eq!((p.width, p.height), (320, 240));
        assert_eq!(p.codec_string, "avc1.42c00d");
    }

    #[test]
    fn rejects_truncated_sps_with_length() {
        let e = parse_sps(&SPS_320X240[..6]).unwrap_err();
        assert!(e.to_string().contains("6 bytes"), "{e}");
        assert!(parse_sps(&[]).is_err());
        assert!(parse_sps(PPS_320X240).is_err());
    }

    #[test]
    fn iterates_nals_with_3_and_4_byte_start_codes() {
        let data = b"junk\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x00\x01\x65\xcc\xdd";
        let v: Vec<&[u8]> = nals(data).collect();
        assert_eq!(v, vec![&b"\x67\xaa"[..], &b"\x68\xbb"[..], &b"\x65\xcc\xdd"[..]]);
        assert!(is_keyframe(data));
        let (sps, pps) = parameter_sets(data);
        assert_eq!(sps, Some(&b"\x67\xaa"[..]));
        assert_eq!(pps, Some(&b"\x68\xbb"[..]));
    }

    #[test]
    fn no_start_code_means_no_nals() {
        assert_eq!(nals(b"\x67\x42").count(), 0);
        assert_eq!(nals(b"").count(), 0);
        assert!(!is_keyframe(b"\x00\x00\x01\x41\x9a"));
    }

    #[test]
    fn escape_roundtrip() {
        let raw = [0u8, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 9, 0, 0];
        let mut esc = Vec::new();
        escape_rbsp(&raw, &mut esc);
        assert!(find_start_code(&esc, 0).is_none());
        assert_eq!(unescape_rbsp(&esc), raw);
    }

    proptest::proptest! {
        #[test]
        fn escape_roundtrip_any(raw in proptest::collection::vec(0u8..5, 0..200)) {
            let mut esc = Vec::new();
            escape_rbsp(&raw, &mut esc);
            proptest::prop_assert!(find_start_code(&esc, 0).is_none());
            proptest::prop_assert_eq!(unescape_rbsp(&esc), raw);
        }
    }
}
