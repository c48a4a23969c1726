//! Splits an unframed H.264 Annex-B byte stream into access units.
//!
//! A byte stream (ffmpeg's `-f h264` output, a camera's raw dump) carries no frame boundaries.
//! Following H.264 §7.4.1.2.3, a new access unit begins at the first AUD, SPS, PPS, SEI or
//! type 14–18 NAL unit after a coded slice, or at a slice whose `first_mb_in_slice` is 0.
//! Because a boundary is only known when the next unit starts, an access unit is emitted when
//! the first NAL unit of the following one arrives (one frame of delay), or on
//! [`AccessUnitSplitter::flush`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    NAL_AUD, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SPS, START_CODE, find_start_code, is_vcl, nal_type, trim_trailing_zeros,
};
use crate::MediaError;

/// One complete access unit (a picture and its non-VCL NAL units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// The NAL units, each after a 4-byte start code.
    pub data: Bytes,
    /// Whether it contains an IDR slice.
    pub keyframe: bool,
    /// The last SPS in it, if any (without start code).
    pub sps: Option<Bytes>,
    /// The last PPS in it, if any (without start code).
    pub pps: Option<Bytes>,
}

/// Incremental Annex-B → access unit splitter with a size cap.
#[derive(Debug)]
pub struct AccessUnitSplitter {
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
    au_sps: Option<Bytes>,
    au_pps: Option<Bytes>,
    max_au_bytes: usize,
}

impl AccessUnitSplitter {
    /// A splitter that rejects access units (and unterminated input) larger than `max_au_bytes`.
    pub fn new(max_au_bytes: usize) -> Self {
        Self {
            input: BytesMut::new(),
            in_nal: false,
            scan_from: 0,
            au: BytesMut::new(),
            au_has_vcl: false,
            au_keyframe: false,
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
        let Some(t) = nal_type(&nal) else { return Ok(()) };
        let starts_new = self.au_has_vcl
            && match t {
                NAL_AUD | NAL_SPS | NAL_PPS | NAL_SEI | 14..=18 => true,
                // first_mb_in_slice is ue(v); a value of 0 is the single bit '1'.
                t if is_vcl(t) => nal.get(1).is_some_and(|b| b & 0x80 != 0),
                _ => false,
            };
        if starts_new && let Some(au) = self.take_au() {
            out.push(au);
        }
        if self.au.len() + START_CODE.len() + nal.len() > self.max_au_bytes {
            return Err(self.overflow());
        }
        self.au.put_slice(&START_CODE);
        self.au.put_slice(&nal);
        match t {
            NAL_SPS => self.au_sps = Some(nal),
            NAL_PPS => self.au_pps = Some(nal),
            NAL_IDR => self.au_keyframe = true,
            _ => {}
        }
        self.au_has_vcl |= is_vcl(t);
        Ok(())
    }

    fn take_au(&mut self) -> Option<AccessUnit> {
        let has_vcl = std::mem::take(&mut self.au_has_vcl);
        let data = self.au.split().freeze();
        let keyframe = std::mem::take(&mut self.au_keyframe);
        let sps = self.au_sps.take();
        let pps = self.au_pps.take();
        // Parameter sets alone (no picture yet) are not an access unit; keep nothing partial.
        (has_vcl && !data.is_empty()).then_some(AccessUnit { data, keyframe, sps, pps })
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
        let mut sp = AccessUnitSplitter::new(1 << 20);
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
        assert_eq!(crate::h264::nals(&aus[2].data).count(), 2, "two slices, one picture");
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
    fn oversized_access_unit_is_an_error_and_recovers() {
        let mut sp = AccessUnitSplitter::new(64);
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
        let mut sp = AccessUnitSplitter::new(1000);
        let mut out = Vec::new();
        let junk = vec![0x55u8; 600];
        sp.push(&junk, &mut out).unwrap();
        assert!(sp.push(&junk, &mut out).is_err());
        assert!(out.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_respects_cap(data in proptest::collection::vec(0u8..4, 0..400), cut in 0usize..400) {
            let mut sp = AccessUnitSplitter::new(128);
            let mut out = Vec::new();
            let cut = cut.min(data.len());
            let _ = sp.push(&data[..cut], &mut out);
            let _ = sp.push(&data[cut..], &mut out);
            let _ = sp.flush(&mut out);
            for au in out { proptest::prop_assert!(au.data.len() <= 128); }
        }
    }
}
