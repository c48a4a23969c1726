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
    r.read_ue("sps_seq_parameter_set_id").map_err(e)?;
    let chroma_format_idc = r.read_ue("chroma_format_idc").map_err(e)?;
    if chroma_format_idc > 3 {
        return Err(invalid(format!("chroma_format_idc {chroma_format_idc}")));
    }
    if chroma_format_idc == 3 {
        r.skip(1, "separate_colour_plane_flag").map_err(e)?;
    }
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
        return Err(invalid(format!("bit depth {} / {}", bit_depth_luma_minus8 + 8, bit_depth_chroma_minus8 + 8)));
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
    };
    Ok((params, profile))
}

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

    #[test]
    fn truncated_sps_is_an_error_or_the_same_answer() {
        let full = parse_sps(SPS).unwrap();
        for n in 0..SPS.len() {
            match parse_sps(&SPS[..n]) {
                Ok(p) => assert_eq!(p, full, "cut at {n}: fields past the cut are not read"),
                Err(_) => assert!(n < 24, "cut at {n} still holds every field read"),
            }
        }
        assert!(parse_sps(&SPS[..18]).is_err());
    }
}
