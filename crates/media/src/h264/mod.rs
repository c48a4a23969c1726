//! H.264 in Annex-B form: NAL unit types, keyframes, parameter sets, SPS parsing.
//!
//! Payloads in mediamesh are Annex-B: every NAL unit follows a start code ([`crate::annexb`]
//! walks and splits them). [`sei`] builds and reads the SEI message the test pattern stamps on
//! every frame.

pub mod sei;

pub use crate::annexb::{START_CODE, escape_rbsp, nals, to_annex_b, unescape_rbsp};
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

/// The `nal_unit_type` of a NAL unit (without start code), or `None` if it is empty.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Whether a NAL unit type is a coded slice (VCL).
pub fn is_vcl(nal_type: u8) -> bool {
    (1..=5).contains(&nal_type)
}

/// Whether an Annex-B access unit contains an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nals(access_unit).any(|n| nal_type(n) == Some(NAL_IDR))
}

/// Whether an Annex-B access unit is a non-reference picture: it has coded slices and every
/// one has `nal_ref_idc` 0, so no other picture is predicted from it and dropping it breaks
/// nothing (B-frames without pyramid, the upper layer of temporal scalability).
pub fn is_non_reference(access_unit: &[u8]) -> bool {
    let mut slices = false;
    for n in nals(access_unit) {
        let Some(&b) = n.first() else { continue };
        if is_vcl(b & 0x1f) {
            if b & 0x60 != 0 {
                return false;
            }
            slices = true;
        }
    }
    slices
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
    let parsed = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).map_err(|e| invalid(sps_error(&e)))?;
    let (width, height) = parsed.pixel_dimensions().map_err(|e| invalid(sps_error(&e)))?;
    if width == 0 || height == 0 {
        return Err(invalid(format!("its cropping leaves a {width}x{height} picture")));
    }
    // profile_idc, the constraint flags byte and level_idc follow the header byte verbatim.
    let codec_string = format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]);
    Ok(VideoParams { width, height, codec_string })
}

/// The chroma format and bit depths an `avcC` box repeats for the high profiles
/// (ISO/IEC 14496-15 §5.3.3.1), or `None` when the SPS's profile carries none (then 4:2:0, 8 bit).
pub fn sps_chroma(sps: &[u8]) -> Result<Option<SpsChroma>, MediaError> {
    use h264_reader::nal::sps::{ChromaFormat, SeqParameterSet};
    use h264_reader::rbsp::{BitReader, decode_nal};

    let invalid = |reason: String| MediaError::InvalidSps { len: sps.len(), reason };
    if sps.len() < 4 || nal_type(sps) != Some(NAL_SPS) {
        return Err(invalid("not an SPS NAL unit".into()));
    }
    let rbsp = decode_nal(sps).map_err(|e| invalid(e.to_string()))?;
    let parsed = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).map_err(|e| invalid(sps_error(&e)))?;
    if !parsed.profile_idc.has_chroma_info() {
        return Ok(None);
    }
    let c = &parsed.chroma_info;
    let format = match c.chroma_format {
        ChromaFormat::Monochrome => 0,
        ChromaFormat::YUV420 => 1,
        ChromaFormat::YUV422 => 2,
        ChromaFormat::YUV444 => 3,
        ChromaFormat::Invalid(v) => return Err(invalid(format!("chroma_format_idc {v}"))),
    };
    Ok(Some(SpsChroma {
        format,
        bit_depth_luma: c.bit_depth_luma_minus8 + 8,
        bit_depth_chroma: c.bit_depth_chroma_minus8 + 8,
    }))
}

/// See [`sps_chroma`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsChroma {
    /// `chroma_format_idc`.
    pub format: u8,
    /// Luma bit depth.
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
}

/// What is wrong with an SPS, in words (h264-reader's errors only have `Debug`).
fn sps_error(e: &h264_reader::nal::sps::SpsError) -> String {
    use h264_reader::nal::sps::SpsError as E;
    match e {
        E::RbspReaderError(b) => bit_error(b),
        E::BitDepthOutOfRange(v) => format!("bit depth {} is out of range", u64::from(*v) + 8),
        E::FieldValueTooLarge { name, value } => format!("{name} = {value} is too large"),
        E::FieldValueTooSmall { name, value } => format!("{name} = {value} is too small"),
        E::Log2MaxFrameNumMinus4OutOfRange(v) => format!("log2_max_frame_num_minus4 = {v} is out of range"),
        E::CpbCountOutOfRange(v) => format!("cpb_cnt_minus1 = {v} is out of range"),
        E::CroppingError(_) => "its cropping is larger than the picture".into(),
        _ => "a field value is out of range".into(),
    }
}

/// What is wrong with a bit string being read, in words.
pub(crate) fn bit_error(e: &h264_reader::rbsp::BitReaderError) -> String {
    use h264_reader::rbsp::BitReaderError as B;
    match e {
        B::ReaderError(field, io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("it ends before {field}")
        }
        B::ReaderError(field, io) => format!("reading {field}: {io}"),
        B::ExpGolombTooLarge(field) => format!("{field} is too large"),
        B::RemainingData => "there is data after its last field".into(),
    }
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
    fn rejects_an_sps_whose_cropping_leaves_no_picture() {
        // Found by the codec_config fuzz target: it parsed to a 0-pixel-high picture.
        let e = parse_sps(b"\x67\x67\x00\xff\xff\x11\x32\xff\xff\xff\xf8\x0b\x00\x11\xff").unwrap_err();
        assert!(e.to_string().contains("cropping leaves"), "{e}");
    }

    #[test]
    fn rejects_truncated_sps_with_length() {
        let e = parse_sps(&SPS_320X240[..6]).unwrap_err();
        assert!(e.to_string().contains("6 bytes"), "{e}");
        assert!(parse_sps(&[]).is_err());
        assert!(parse_sps(PPS_320X240).is_err());
    }

    #[test]
    fn finds_keyframes_and_parameter_sets() {
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
        assert!(crate::annexb::find_start_code(&esc, 0).is_none());
        assert_eq!(unescape_rbsp(&esc), raw);
    }

    proptest::proptest! {
        #[test]
        fn escape_roundtrip_any(raw in proptest::collection::vec(0u8..5, 0..200)) {
            let mut esc = Vec::new();
            escape_rbsp(&raw, &mut esc);
            proptest::prop_assert!(crate::annexb::find_start_code(&esc, 0).is_none());
            proptest::prop_assert_eq!(unescape_rbsp(&esc), raw);
        }
    }
}
