//! Splits an unframed H.264 or H.265 Annex-B byte stream into access units.
//!
//! A byte stream (ffmpeg's `-f h264` / `-f hevc` output, a camera's raw dump) carries no frame
//! boundaries. A new access unit begins at the first non-VCL NAL unit of the kinds that open
//! one (H.264 §7.4.1.2.3: AUD, SPS, PPS, SEI, types 14–18; H.265 §7.4.2.4.4: AUD, VPS, SPS, PPS,
//! prefix SEI, types 41–44 and 48–55) after a coded slice, or at a slice that starts a new
//! picture (`first_mb_in_slice == 0`; `first_slice_segment_in_pic_flag`).
//! Because a boundary is only known when the next unit starts, an access unit is emitted when
//! the first NAL unit of the following one arrives (one frame of delay), or on
//! [`AccessUnitSplitter::flush`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{START_CODE, find_start_code, trim_trailing_zeros};
use crate::{MediaError, h264, h265};

/// Which NAL unit syntax the byte stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (1-byte NAL header).
    H264,
    /// H.265 (2-byte NAL header).
    H265,
}

/// What the splitter needs to know about one NAL unit.
struct NalInfo {
    vcl: bool,
    /// Whether it begins a new access unit when it follows a VCL NAL unit.
    opens_au: bool,
    keyframe: bool,
    kind: ParamKind,
}

#[derive(PartialEq)]
enum ParamKind {
    None,
    Vps,
    Sps,
    Pps,
}

impl VideoCodec {
    fn classify(self, nal: &[u8]) -> Option<NalInfo> {
        match self {
            VideoCodec::H264 => {
                let t = h264::nal_type(nal)?;
                let vcl = h264::is_vcl(t);
                Some(NalInfo {
                    vcl,
                    // first_mb_in_slice is ue(v); a value of 0 is the single bit '1'.
                    opens_au: matches!(t, h264::NAL_AUD | h264::NAL_SPS | h264::NAL_PPS | h264::NAL_SEI | 14..=18)
                        || (vcl && nal.get(1).is_some_and(|b| b & 0x80 != 0)),
                    keyframe: t == h264::NAL_IDR,
                    kind: match t {
                        h264::NAL_SPS => ParamKind::Sps,
                        h264::NAL_PPS => ParamKind::Pps,
                        _ => ParamKind::None,
                    },
                })
            }
            VideoCodec::H265 => {
                let t = h265::nal_type(nal)?;
                let vcl = h265::is_vcl(t);
                Some(NalInfo {
                    vcl,
                    // first_slice_segment_in_pic_flag is the first bit after the 2-byte header.
                    opens_au: matches!(t, 32..=35 | h265::NAL_PREFIX_SEI | 41..=44 | 48..=55)
                        || (vcl && nal.get(2).is_some_and(|b| b & 0x80 != 0)),
                    keyframe: h265::is_irap(t),
                    kind: match t {
                        h265::NAL_VPS => ParamKind::Vps,
                        h265::NAL_SPS => ParamKind::Sps,
                        h265::NAL_PPS => ParamKind::Pps,
                        _ => ParamKind::None,
                    },
                })
            }
        }
    }
}

/// One complete access unit (a picture and its non-VCL NAL units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// The NAL units, each after a 4-byte start code.
    pub data: Bytes,
    /// Whether it contains an IDR (H.264) or IRAP (H.265) slice.
    pub keyframe: bool,
    /// The last VPS in it, if any (H.265 only; without start code).
    pub vps: Option<Bytes>,
    /// The last SPS in it, if any (without start code).
    pub sps: Option<Bytes>,
    /// The last PPS in it, if any (without start code).
    pub pps: Option<Bytes>,
}

/// Incremental Annex-B → access unit splitter with a size cap.
#[derive(Debug)]
pub struct AccessUnitSplitter {
    codec: VideoCodec,
    /// Input not yet turned into whole NAL units; starts at a NAL body once one was found.
    input: BytesMut,
    /// Whether `input` begins just after a start code (i.e. at a NAL unit body).
    in_nal: bool,
    /// Where to resume the start-code search in `input`.
    scan_from: usize,
    /// The access unit being assembled.
    au: BytesMut,
    au_has_vcl: bool,
    au_keyframe: bool,
    au_vps: Option<Bytes>,
    au_sps: Option<Bytes>,
    au_pps: Option<Bytes>,
    max_au_bytes: usize,
}

impl AccessUnitSplitter {
    /// A splitter for `codec` that rejects access units (and unterminated input) larger than
    /// `max_au_bytes`.
    pub fn new(codec: VideoCodec, max_au_bytes: usize) -> Self {
        Self {
            codec,
            input: BytesMut::new(),
            in_nal: false,
            scan_from: 0,
            au: BytesMut::new(),
            au_has_vcl: false,
            au_keyframe: false,
            au_vps: None,
            au_sps: None,
            au_pps: None,
            max_au_bytes,
        }
    }

    /// Feeds bytes; pushes every access unit they complete onto `out`.
    ///
    /// On [`MediaError::AccessUnitTooLarge`] the partial data is discarded and the splitter
    /// resynchronises at the next start code, so a caller may log and keep feeding.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<AccessUnit>) -> Result<(), MediaError> {
        self.input.extend_from_slice(bytes);
        loop {
            let Some((sc, after)) = find_start_code(&self.input, self.scan_from) else {
                // Keep the last two bytes: they may be the start of a split start code.
                self.scan_from = self.input.len().saturating_sub(2);
                if self.input.len() > self.max_au_bytes {
                    return Err(self.overflow());
                }
                return Ok(());
            };
            if self.in_nal {
                let nal = self.input.split_to(sc).freeze();
                self.handle_nal(nal, out)?;
                self.input.advance(after - sc);
            } else {
                // Bytes before the first start code are not part of any NAL unit.
                self.input.advance(after);
                self.in_nal = true;
            }
            self.scan_from = 0;
        }
    }

    /// Ends the stream: pushes the access units still pending onto `out`.
    pub fn flush(&mut self, out: &mut Vec<AccessUnit>) -> Result<(), MediaError> {
        let pending = self.in_nal.then(|| self.input.split().freeze());
        self.input.clear();
        self.in_nal = false;
        self.scan_from = 0;
        if let Some(nal) = pending {
            self.handle_nal(nal, out)?;
        }
        out.extend(self.take_au());
        Ok(())
    }

    fn handle_nal(&mut self, nal: Bytes, out: &mut Vec<AccessUnit>) -> Result<(), MediaError> {
        let end = trim_trailing_zeros(&nal).len();
        let nal = nal.slice(..end);
        let Some(info) = self.codec.classify(&nal) else { return Ok(()) };
        if self.au_has_vcl
            && info.opens_au
            && let Some(au) = self.take_au()
        {
            out.push(au);
        }
        if self.au.len() + START_CODE.len() + nal.len() > self.max_au_bytes {
            return Err(self.overflow());
        }
        self.au.put_slice(&START_CODE);
        self.au.put_slice(&nal);
        match info.kind {
            ParamKind::Vps => self.au_vps = Some(nal),
            ParamKind::Sps => self.au_sps = Some(nal),
            ParamKind::Pps => self.au_pps = Some(nal),
            ParamKind::None => {}
        }
        self.au_keyframe |= info.keyframe;
        self.au_has_vcl |= info.vcl;
        Ok(())
    }

    fn take_au(&mut self) -> Option<AccessUnit> {
        let has_vcl = std::mem::take(&mut self.au_has_vcl);
        let data = self.au.split().freeze();
        let keyframe = std::mem::take(&mut self.au_keyframe);
        let (vps, sps, pps) = (self.au_vps.take(), self.au_sps.take(), self.au_pps.take());
        // Parameter sets alone (no picture yet) are not an access unit; keep nothing partial.
        (has_vcl && !data.is_empty()).then_some(AccessUnit { data, keyframe, vps, sps, pps })
    }

    fn overflow(&mut self) -> MediaError {
        self.input.clear();
        self.in_nal = false;
        self.scan_from = 0;
        self.take_au();
        MediaError::AccessUnitTooLarge { cap: self.max_au_bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SPS, PPS, IDR slice (first_mb 0), P slice, P slice split in two slices, P slice.
    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        for nal in [
            &b"\x67\x42\x00\x1e"[..],
            b"\x68\xce\x38\x80",
            b"\x65\x88\x84\x00",
            b"\x41\x9a\x00\x11",
            b"\x41\x9a\x22",
            b"\x41\x40\x33", // first_mb_in_slice != 0: same picture
            b"\x41\x9a\x44",
        ] {
            s.extend_from_slice(&[0, 0, 0, 1]);
            s.extend_from_slice(nal);
        }
        s
    }

    fn split_all(chunks: &[&[u8]]) -> Vec<AccessUnit> {
        let mut sp = AccessUnitSplitter::new(VideoCodec::H264, 1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            sp.push(c, &mut out).unwrap();
        }
        sp.flush(&mut out).unwrap();
        out
    }

    #[test]
    fn splits_pictures() {
        let s = stream();
        let aus = split_all(&[&s]);
        assert_eq!(aus.len(), 4);
        assert!(aus[0].keyframe);
        assert_eq!(aus[0].sps.as_deref(), Some(&b"\x67\x42\x00\x1e"[..]));
        assert_eq!(aus[0].pps.as_deref(), Some(&b"\x68\xce\x38\x80"[..]));
        assert!(!aus[1].keyframe);
        assert_eq!(crate::annexb::nals(&aus[2].data).count(), 2, "two slices, one picture");
        assert_eq!(&aus[3].data[..], b"\x00\x00\x00\x01\x41\x9a\x44");
    }

    #[test]
    fn same_result_for_every_split_point() {
        let s = stream();
        let whole = split_all(&[&s]);
        for i in 0..=s.len() {
            assert_eq!(split_all(&[&s[..i], &s[i..]]), whole, "split at {i}");
        }
        let bytewise: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(split_all(&bytewise), whole);
    }

    #[test]
    fn splits_h265_pictures() {
        use crate::h265::tests::{PPS, SPS, VPS};
        let mut s = Vec::new();
        for nal in [
            VPS,
            SPS,
            PPS,
            &b"\x4e\x01\x05"[..],
            b"\x26\x01\xaf\x11",
            b"\x02\x01\xd0\x22",
            b"\x02\x01\x40\x33",
            b"\x02\x01\xd0\x44",
        ] {
            s.extend_from_slice(&[0, 0, 0, 1]);
            s.extend_from_slice(nal);
        }
        let mut sp = AccessUnitSplitter::new(VideoCodec::H265, 1 << 20);
        let mut out = Vec::new();
        sp.push(&s, &mut out).unwrap();
        sp.flush(&mut out).unwrap();
        assert_eq!(out.len(), 3, "IDR, then a two-segment picture, then a picture");
        assert!(out[0].keyframe);
        assert_eq!(
            (out[0].vps.as_deref(), out[0].sps.as_deref(), out[0].pps.as_deref()),
            (Some(VPS), Some(SPS), Some(PPS))
        );
        assert!(!out[1].keyframe);
        assert_eq!(crate::annexb::nals(&out[1].data).count(), 2);
    }

    #[test]
    fn oversized_access_unit_is_an_error_and_recovers() {
        let mut sp = AccessUnitSplitter::new(VideoCodec::H264, 64);
        let mut out = Vec::new();
        let mut big = vec![0, 0, 0, 1, 0x65];
        big.extend(std::iter::repeat_n(0x55, 100));
        big.extend_from_slice(&[0, 0, 1, 0x41, 0x9a]);
        assert!(matches!(sp.push(&big, &mut out), Err(MediaError::AccessUnitTooLarge { cap: 64 })));
        sp.push(&[0, 0, 1, 0x65, 0x88, 0, 0, 1, 0x41, 0x9a], &mut out).unwrap();
        sp.flush(&mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[0].keyframe);
    }

    #[test]
    fn garbage_without_start_codes_is_bounded() {
        let mut sp = AccessUnitSplitter::new(VideoCodec::H264, 1000);
        let mut out = Vec::new();
        let junk = vec![0x55u8; 600];
        sp.push(&junk, &mut out).unwrap();
        assert!(sp.push(&junk, &mut out).is_err());
        assert!(out.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_respects_cap(data in proptest::collection::vec(0u8..4, 0..400), cut in 0usize..400) {
            let mut sp = AccessUnitSplitter::new(VideoCodec::H264, 128);
            let mut out = Vec::new();
            let cut = cut.min(data.len());
            let _ = sp.push(&data[..cut], &mut out);
            let _ = sp.push(&data[cut..], &mut out);
            let _ = sp.flush(&mut out);
            for au in out { proptest::prop_assert!(au.data.len() <= 128); }
        }
    }
}
