//! H.265 / HEVC in Annex-B form: NAL unit types, keyframes, parameter sets, SPS parsing.

use h264_reader::rbsp::{BitRead, BitReader};

use crate::annexb::{nals, unescape_rbsp};
use crate::{MediaError, VideoParams};

/// Video parameter set.
pub const NAL_VPS: u8 = 32;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// Picture parameter set.
pub const NAL_PPS: u8 = 34;
/// Access unit delimiter.
pub const NAL_AUD: u8 = 35;
/// Prefix SEI.
pub const NAL_PREFIX_SEI: u8 = 39;
/// Aggregation packet (RTP, RFC 7798).
pub const NAL_AP: u8 = 48;
/// Fragmentation unit (RTP, RFC 7798).
pub const NAL_FU: u8 = 49;

/// The `nal_unit_type` of a NAL unit (without start code; 2-byte header), or `None`.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    (nal.len() >= 2).then(|| (nal[0] >> 1) & 0x3f)
}

/// Whether a NAL unit type is a coded slice segment (VCL).
pub fn is_vcl(nal_type: u8) -> bool {
    nal_type < 32
}

/// Whether a NAL unit type is an IRAP picture (BLA, IDR, CRA): a keyframe.
pub fn is_irap(nal_type: u8) -> bool {
    (16..=21).contains(&nal_type)
}

/// Whether an Annex-B access unit contains an IRAP slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nals(access_unit).any(|n| nal_type(n).is_some_and(is_irap))
}

/// If every coded slice of an Annex-B access unit is a sub-layer non-reference picture
/// (TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N and the reserved even types below 16), the temporal
/// id they share. Such a picture is not referenced within its own sub-layer; it is safe to drop
/// when no higher sub-layer exists, which the caller judges from the highest temporal id seen.
pub fn non_reference_temporal_id(access_unit: &[u8]) -> Option<u8> {
    let mut tid = None;
    for n in nals(access_unit) {
        let Some(t) = nal_type(n) else { continue };
        if !is_vcl(t) {
            continue;
        }
        if t >= 16 || t % 2 != 0 {
            return None;
        }
        let this = (n[1] & 0x07).saturating_sub(1);
        if tid.is_some_and(|x| x != this) {
            return None;
        }
        tid = Some(this);
    }
    tid
}

/// The highest temporal id of the coded slices of an Annex-B access unit.
pub fn temporal_id(access_unit: &[u8]) -> Option<u8> {
    nals(access_unit).filter(|n| nal_type(n).is_some_and(is_vcl)).map(|n| (n[1] & 0x07).saturating_sub(1)).max()
}

/// What an `hvcC` box (ISO/IEC 14496-15 §8.3.3) repeats from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsProfile {
    /// `general_profile_space`.
    pub profile_space: u8,
    /// `general_tier_flag`.
    pub tier: bool,
    /// `general_profile_idc`.
    pub profile_idc: u8,
    /// `general_profile_compatibility_flags`.
    pub compatibility: u32,
    /// `general_constraint_indicator_flags`.
    pub constraint: [u8; 6],
    /// `general_level_idc`.
    pub level_idc: u8,
    /// `chroma_format_idc`.
    pub chroma_format_idc: u8,
    /// `bit_depth_luma_minus8`.
    pub bit_depth_luma_minus8: u8,
    /// `bit_depth_chroma_minus8`.
    pub bit_depth_chroma_minus8: u8,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub temporal_layers: u8,
    /// `sps_temporal_id_nesting_flag`.
    pub temporal_id_nested: bool,
    /// `sps_seq_parameter_set_id`.
    pub sps_id: u8,
    /// `separate_colour_plane_flag`.
    pub separate_colour_plane: bool,
    /// `log2_max_pic_order_cnt_lsb_minus4 + 4`: the width of a slice's POC field.
    pub log2_max_poc_lsb: u8,
    /// `sps_max_num_reorder_pics` of the highest sub-layer: how many pictures may precede one
    /// in decode order and follow it in output order (0 without B-frames).
    pub max_num_reorder: u32,
}

/// Parses an SPS NAL unit (without start code) into picture size and codec string.
pub fn parse_sps(sps: &[u8]) -> Result<VideoParams, MediaError> {
    parse_sps_profile(sps).map(|(params, _)| params)
}

/// Parses an SPS NAL unit (without start code) into picture size, codec string and the fields
/// a decoder configuration record repeats.
pub fn parse_sps_profile(sps: &[u8]) -> Result<(VideoParams, SpsProfile), MediaError> {
    let invalid = |reason: String| MediaError::InvalidSps { len: sps.len(), reason };
    if nal_type(sps) != Some(NAL_SPS) {
        return Err(invalid("not an H.265 SPS NAL unit".into()));
    }
    let rbsp = unescape_rbsp(&sps[2..]);
    let e = |e: h264_reader::rbsp::BitReaderError| invalid(crate::h264::bit_error(&e));
    let mut r = BitReader::new(&rbsp[..]);
    r.skip(4, "sps_video_parameter_set_id").map_err(e)?;
    let max_sub_layers_minus1: u8 = r.read::<3, u8>("sps_max_sub_layers_minus1").map_err(e)?;
    let temporal_id_nested = r.read_bit("sps_temporal_id_nesting_flag").map_err(e)?;
    // profile_tier_level(1, sps_max_sub_layers_minus1)
    let profile_space: u8 = r.read::<2, u8>("general_profile_space").map_err(e)?;
    let tier: bool = r.read_bit("general_tier_flag").map_err(e)?;
    let profile_idc: u8 = r.read::<5, u8>("general_profile_idc").map_err(e)?;
    let compat: u32 = r.read::<32, u32>("general_profile_compatibility_flags").map_err(e)?;
    let mut constraint = [0u8; 6];
    for b in &mut constraint {
        *b = r.read::<8, u8>("general_constraint_indicator_flags").map_err(e)?;
    }
    let level_idc: u8 = r.read::<8, u8>("general_level_idc").map_err(e)?;
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    for i in 0..usize::from(max_sub_layers_minus1) {
        sub_profile[i] = r.read_bit("sub_layer_profile_present_flag").map_err(e)?;
        sub_level[i] = r.read_bit("sub_layer_level_present_flag").map_err(e)?;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2, "reserved_zero_2bits").map_err(e)?;
        }
    }
    for i in 0..usize::from(max_sub_layers_minus1) {
        if sub_profile[i] {
            r.skip(88, "sub_layer_profile").map_err(e)?;
        }
        if sub_level[i] {
            r.skip(8, "sub_layer_level_idc").map_err(e)?;
        }
    }
    let sps_id = r.read_ue("sps_seq_parameter_set_id").map_err(e)?;
    if sps_id > 15 {
        return Err(invalid(format!("sps_seq_parameter_set_id {sps_id}")));
    }
    let chroma_format_idc = r.read_ue("chroma_format_idc").map_err(e)?;
    if chroma_format_idc > 3 {
        return Err(invalid(format!("chroma_format_idc {chroma_format_idc}")));
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.read_bit("separate_colour_plane_flag").map_err(e)?;
    let chroma_format_idc = chroma_format_idc as u8;
    let width = r.read_ue("pic_width_in_luma_samples").map_err(e)?;
    let height = r.read_ue("pic_height_in_luma_samples").map_err(e)?;
    let (mut crop_w, mut crop_h) = (0, 0);
    if r.read_bit("conformance_window_flag").map_err(e)? {
        let (sub_w, sub_h) = match chroma_format_idc {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let left = r.read_ue("conf_win_left_offset").map_err(e)?;
        let right = r.read_ue("conf_win_right_offset").map_err(e)?;
        let top = r.read_ue("conf_win_top_offset").map_err(e)?;
        let bottom = r.read_ue("conf_win_bottom_offset").map_err(e)?;
        crop_w = left.saturating_add(right).saturating_mul(sub_w);
        crop_h = top.saturating_add(bottom).saturating_mul(sub_h);
    }
    if width == 0 || height == 0 || crop_w >= width || crop_h >= height || width > 16_384 || height > 16_384 {
        return Err(invalid(format!("implausible picture size {width}x{height}")));
    }
    let bit_depth_luma_minus8 = r.read_ue("bit_depth_luma_minus8").map_err(e)?;
    let bit_depth_chroma_minus8 = r.read_ue("bit_depth_chroma_minus8").map_err(e)?;
    if bit_depth_luma_minus8 > 8 || bit_depth_chroma_minus8 > 8 {
        // Either may be near u32::MAX (read from the stream): saturate rather than overflow.
        let (luma, chroma) = (bit_depth_luma_minus8.saturating_add(8), bit_depth_chroma_minus8.saturating_add(8));
        return Err(invalid(format!("bit depth {luma} / {chroma}")));
    }
    let log2_max_poc_lsb_minus4 = r.read_ue("log2_max_pic_order_cnt_lsb_minus4").map_err(e)?;
    if log2_max_poc_lsb_minus4 > 12 {
        return Err(invalid(format!("log2_max_pic_order_cnt_lsb_minus4 {log2_max_poc_lsb_minus4}")));
    }
    let ordering_for_all = r.read_bit("sps_sub_layer_ordering_info_present_flag").map_err(e)?;
    let first = if ordering_for_all { 0 } else { max_sub_layers_minus1 };
    let mut max_num_reorder = 0;
    for _ in first..=max_sub_layers_minus1 {
        r.read_ue("sps_max_dec_pic_buffering_minus1").map_err(e)?;
        max_num_reorder = r.read_ue("sps_max_num_reorder_pics").map_err(e)?;
        r.read_ue("sps_max_latency_increase_plus1").map_err(e)?;
    }
    if max_num_reorder > 16 {
        return Err(invalid(format!("sps_max_num_reorder_pics {max_num_reorder}")));
    }
    let params = VideoParams {
        width: width - crop_w,
        height: height - crop_h,
        codec_string: codec_string(profile_space, tier, profile_idc, compat, &constraint, level_idc),
    };
    let profile = SpsProfile {
        profile_space,
        tier,
        profile_idc,
        compatibility: compat,
        constraint,
        level_idc,
        chroma_format_idc,
        bit_depth_luma_minus8: bit_depth_luma_minus8 as u8,
        bit_depth_chroma_minus8: bit_depth_chroma_minus8 as u8,
        temporal_layers: max_sub_layers_minus1 + 1,
        temporal_id_nested,
        sps_id: sps_id as u8,
        separate_colour_plane,
        log2_max_poc_lsb: log2_max_poc_lsb_minus4 as u8 + 4,
        max_num_reorder,
    };
    Ok((params, profile))
}

/// What a slice header needs from a PPS (H.265 §7.3.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PpsOrder {
    /// `pps_pic_parameter_set_id`.
    pub pps_id: u8,
    /// `pps_seq_parameter_set_id`.
    pub sps_id: u8,
    /// `output_flag_present_flag`.
    pub output_flag_present: bool,
    /// `num_extra_slice_header_bits`.
    pub extra_slice_header_bits: u8,
}

/// Reads the start of a PPS NAL unit (without start code).
pub fn parse_pps(pps: &[u8]) -> Result<PpsOrder, MediaError> {
    let invalid = |reason: String| MediaError::InvalidSps { len: pps.len(), reason: format!("PPS: {reason}") };
    if nal_type(pps) != Some(NAL_PPS) || pps.len() < 3 {
        return Err(invalid("not an H.265 PPS NAL unit".into()));
    }
    let rbsp = unescape_rbsp(&pps[2..pps.len().min(2 + 64)]);
    let e = |e: h264_reader::rbsp::BitReaderError| invalid(crate::h264::bit_error(&e));
    let mut r = BitReader::new(&rbsp[..]);
    let pps_id = r.read_ue("pps_pic_parameter_set_id").map_err(e)?;
    let sps_id = r.read_ue("pps_seq_parameter_set_id").map_err(e)?;
    if pps_id > 63 || sps_id > 15 {
        return Err(invalid(format!("parameter set ids {pps_id} / {sps_id}")));
    }
    r.skip(1, "dependent_slice_segments_enabled_flag").map_err(e)?;
    let output_flag_present = r.read_bit("output_flag_present_flag").map_err(e)?;
    let extra_slice_header_bits = r.read::<3, u8>("num_extra_slice_header_bits").map_err(e)?;
    Ok(PpsOrder { pps_id: pps_id as u8, sps_id: sps_id as u8, output_flag_present, extra_slice_header_bits })
}

/// The start of a picture's first slice segment: which PPS it uses and its POC field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceOrder {
    /// `slice_pic_parameter_set_id`.
    pub pps_id: u8,
    /// `slice_pic_order_cnt_lsb` (0 for IDR pictures, which carry none).
    pub poc_lsb: u32,
}

/// Reads the first slice segment header of a picture (`None` for a later segment of the same
/// picture, which says nothing new). `pps` and `sps` look parameter sets up by id.
pub fn parse_slice_order(
    nal: &[u8],
    pps: impl Fn(u8) -> Option<PpsOrder>,
    sps: impl Fn(u8) -> Option<SpsProfile>,
) -> Result<Option<SliceOrder>, MediaError> {
    let invalid = |reason: String| MediaError::InvalidSps { len: nal.len(), reason: format!("slice: {reason}") };
    let kind = nal_type(nal).ok_or_else(|| invalid("empty".into()))?;
    if !is_vcl(kind) || nal.len() < 3 {
        return Err(invalid(format!("NAL unit type {kind} is no slice")));
    }
    // The fields needed sit in the first bytes; the slice data after them is not read.
    let rbsp = unescape_rbsp(&nal[2..nal.len().min(2 + 64)]);
    let e = |e: h264_reader::rbsp::BitReaderError| invalid(crate::h264::bit_error(&e));
    let mut r = BitReader::new(&rbsp[..]);
    if !r.read_bit("first_slice_segment_in_pic_flag").map_err(e)? {
        return Ok(None);
    }
    if is_irap(kind) {
        r.skip(1, "no_output_of_prior_pics_flag").map_err(e)?;
    }
    let pps_id = r.read_ue("slice_pic_parameter_set_id").map_err(e)?;
    let p = u8::try_from(pps_id).ok().and_then(&pps).ok_or_else(|| invalid(format!("unknown PPS {pps_id}")))?;
    let s = sps(p.sps_id).ok_or_else(|| invalid(format!("unknown SPS {}", p.sps_id)))?;
    r.skip(u32::from(p.extra_slice_header_bits), "slice_reserved_flag").map_err(e)?;
    r.read_ue("slice_type").map_err(e)?;
    if p.output_flag_present {
        r.skip(1, "pic_output_flag").map_err(e)?;
    }
    if s.separate_colour_plane {
        r.skip(2, "colour_plane_id").map_err(e)?;
    }
    let poc_lsb = if matches!(kind, NAL_IDR_W_RADL | NAL_IDR_N_LP) {
        0
    } else {
        r.read_var::<u32>(u32::from(s.log2_max_poc_lsb), "slice_pic_order_cnt_lsb").map_err(e)?
    };
    Ok(Some(SliceOrder { pps_id: p.pps_id, poc_lsb }))
}

/// IDR picture that may have leading pictures.
pub const NAL_IDR_W_RADL: u8 = 19;
/// IDR picture without leading pictures.
pub const NAL_IDR_N_LP: u8 = 20;
/// Clean random access picture.
pub const NAL_CRA: u8 = 21;

/// The RFC 6381 codec string of an HEVC stream (ISO/IEC 14496-15 Annex E), e.g. `hvc1.1.6.L93.B0`.
fn codec_string(space: u8, tier: bool, profile: u8, compat: u32, constraint: &[u8; 6], level: u8) -> String {
    let space = ["", "A", "B", "C"][usize::from(space & 3)];
    let mut s = format!("hvc1.{space}{profile}.{:X}.{}{level}", compat.reverse_bits(), if tier { 'H' } else { 'L' });
    let used = constraint.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    for b in &constraint[..used] {
        s.push_str(&format!(".{b:X}"));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// VPS, SPS and PPS of a 320x240 Main-profile stream made by libx265.
    pub(crate) const VPS: &[u8] =
        b"\x40\x01\x0c\x01\xff\xff\x01\x60\x00\x00\x03\x00\x90\x00\x00\x03\x00\x00\x03\x00\x3c\x95\x98\x09";
    pub(crate) const SPS: &[u8] = b"\x42\x01\x01\x01\x60\x00\x00\x03\x00\x90\x00\x00\x03\x00\x00\x03\x00\x3c\xa0\x0a\x08\x0f\x16\x59\x59\xa4\x93\x2b\xc0\x5a\x02\x00\x00\x03\x00\x02\x00\x00\x03\x00\x32\x10";
    pub(crate) const PPS: &[u8] = b"\x44\x01\xc1\x72\xb4\x62\x40";

    #[test]
    fn parses_x265_sps() {
        let p = parse_sps(SPS).unwrap();
        assert_eq!((p.width, p.height), (320, 240));
        assert_eq!(p.codec_string, "hvc1.1.6.L60.90");
        let (_, profile) = parse_sps_profile(SPS).unwrap();
        assert_eq!((profile.profile_idc, profile.level_idc, profile.chroma_format_idc), (1, 60, 1));
        assert_eq!((profile.bit_depth_luma_minus8, profile.bit_depth_chroma_minus8), (0, 0));
        assert_eq!((profile.temporal_layers, profile.temporal_id_nested), (1, true));
        assert_eq!(profile.constraint, [0x90, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn nal_types_and_keyframes() {
        assert_eq!(nal_type(VPS), Some(NAL_VPS));
        assert_eq!(nal_type(PPS), Some(NAL_PPS));
        assert!(is_irap(19) && is_irap(21) && !is_irap(1) && !is_irap(22));
        assert!(is_keyframe(b"\x00\x00\x00\x01\x26\x01\xaf"));
        assert!(!is_keyframe(b"\x00\x00\x00\x01\x02\x01\xd0"));
    }

    /// Found by the fuzzer in CI: a bit depth read as u32::MAX overflowed the error message.
    #[test]
    fn a_huge_bit_depth_is_an_error_not_an_overflow() {
        let sps: &[u8] = &[
            67, 1, 2, 128, 0, 0, 0, 0, 41, 0, 3, 0, 0, 3, 0, 0, 0, 103, 43, 43, 0, 0, 0, 0, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 0, 0, 0, 0,
        ];
        assert!(parse_sps(sps).is_err());
    }

    #[test]
    fn truncated_sps_is_an_error_or_the_same_answer() {
        let full = parse_sps_profile(SPS).unwrap();
        let mut parsed = false;
        for n in 0..SPS.len() {
            match parse_sps_profile(&SPS[..n]) {
                Ok(p) => {
                    assert_eq!(p, full, "cut at {n}: fields past the cut are not read");
                    parsed = true;
                }
                Err(_) => assert!(!parsed, "cut at {n} fails after a shorter cut parsed"),
            }
        }
        assert_eq!((full.1.log2_max_poc_lsb, full.1.max_num_reorder), (8, 2), "the fields after the bit depths");
        assert!(parse_sps(&SPS[..18]).is_err());
    }
}
