//! Decode and presentation times of H.264 and H.265 with B-frames, from the bitstream's
//! picture order. No I/O.
//!
//! A source knows one of the two times of each access unit. An RTSP camera sends the
//! presentation time (the RTP timestamp); a raw Annex-B stream (ffmpeg's output, a clip file)
//! arrives in decode order and is stamped as it comes, which is a decode time. With B-frames
//! the two differ, and MP4 (MSE, LL-HLS) needs both. The picture order count (POC) in every
//! slice header gives a picture's place in output order, and with the frame duration and the
//! encoder's reorder depth that gives the other time:
//!
//! ```text
//! pts - dts = (rank - index + depth) × duration
//! ```
//!
//! `index` counts pictures in decode order and `rank` in output order (POC over the POC step)
//! since the last POC reset (an IDR); `depth` is how many pictures the encoder may hold back
//! (the SPS's `max_num_reorder_frames` or `sps_max_num_reorder_pics`, learned from the stream
//! when an H.264 SPS does not say). MediaMTX's DTS extractor answers the same question for
//! RTSP.
//!
//! Without reordering (Baseline, the test pattern, most IP cameras) `rank == index` and
//! `depth == 0`: both times are the one known. So is anything this cannot read (H.264 POC
//! type 1, a slice before its parameter sets, a corrupt header): never worse than taking the
//! known time for both.

use std::borrow::Cow;

use h264_reader::nal::NalHeader;
use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::slice::{PicOrderCountLsb, SliceHeader};
use h264_reader::nal::sps::{PicOrderCntType, SeqParameterSet};
use h264_reader::rbsp::{BitReader, decode_nal};

use crate::annexb::nals;
use crate::{Codec, h264, h265};

/// The bytes of a slice NAL unit read for its header; the slice data after it is not needed.
const SLICE_HEADER_BYTES: usize = 256;

/// The time a source knows for an access unit, in the track's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The presentation time (RTP).
    Pts(i64),
    /// The decode time (arrival order of a raw stream).
    Dts(i64),
}

/// Both times of an access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Presentation time.
    pub pts: i64,
    /// Decode time.
    pub dts: i64,
}

/// A picture's place in output order, as its first slice tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The POC restarts here (IDR, BLA, a stream's first CRA).
    Reset(i64),
    /// The POC continues.
    Next(i64),
    /// Output order is decode order (H.264 POC type 2).
    AsDecoded,
    /// Not readable.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    known: i64,
    rank: i64,
}

/// Derives the time a source does not know from the one it does, access unit by access unit
/// in decode order ([module docs](self)).
pub struct Reorder {
    codec: Codec,
    h264: h264_reader::Context,
    /// `prevPicOrderCntMsb` and `prevPicOrderCntLsb` of the last H.264 reference picture.
    h264_prev: (i64, i64),
    h265_sps: [Option<h265::SpsProfile>; 16],
    h265_pps: Box<[Option<h265::PpsOrder>; 64]>,
    /// The POC of the last H.265 picture of temporal id 0 that is a reference (`prevTid0Pic`).
    h265_prev_tid0: Option<i64>,
    /// The reorder depth the active SPS declares.
    declared_depth: Option<i64>,
    /// The largest `index - rank` seen, for an SPS that declares nothing.
    learned_depth: i64,
    /// POC units per picture: 2 for most H.264 encoders, 1 for H.265.
    step: i64,
    /// The step the current GOP's POCs agree on so far (0: none seen).
    gop_step: i64,
    duration: i64,
    gop_poc: i64,
    index: i64,
    last: Option<Last>,
    last_dts: Option<i64>,
}

impl std::fmt::Debug for Reorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reorder")
            .field("codec", &self.codec)
            .field("depth", &self.declared_depth.unwrap_or(self.learned_depth))
            .field("step", &self.step)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl Reorder {
    /// For a video track of `codec` whose clock runs at `clock_rate`; the frame duration is
    /// assumed 1/25 s until the stream shows it.
    pub fn new(codec: Codec, clock_rate: u32) -> Self {
        Self {
            codec,
            h264: h264_reader::Context::new(),
            h264_prev: (0, 0),
            h265_sps: Default::default(),
            h265_pps: Box::new([None; 64]),
            h265_prev_tid0: None,
            declared_depth: None,
            learned_depth: 0,
            step: if codec == Codec::H265 { 1 } else { 2 },
            gop_step: 0,
            duration: i64::from(clock_rate / 25).max(1),
            gop_poc: 0,
            index: 0,
            last: None,
            last_dts: None,
        }
    }

    /// The reorder depth in use: how many pictures the encoder may hold back.
    pub fn depth(&self) -> i64 {
        self.declared_depth.unwrap_or(self.learned_depth)
    }

    /// Both times of the next access unit in decode order (Annex-B).
    pub fn times(&mut self, access_unit: &[u8], known: Known) -> Times {
        let order = match self.codec {
            Codec::H264 => self.h264_order(access_unit),
            Codec::H265 => self.h265_order(access_unit),
            _ => Order::Unknown,
        };
        let (poc, reset) = match order {
            Order::Reset(poc) => (poc, true),
            Order::Next(poc) => (poc, false),
            Order::AsDecoded | Order::Unknown => {
                self.last = None;
                let v = match known {
                    Known::Pts(v) | Known::Dts(v) => v,
                };
                self.last_dts = Some(v);
                return Times { pts: v, dts: v };
            }
        };
        if reset || self.last.is_none() {
            // A GOP's POCs all agreed on a larger step: use it (a smaller one was taken at once).
            if self.gop_step > 0 {
                self.step = self.gop_step;
            }
            self.gop_step = 0;
            self.gop_poc = poc;
            self.index = 0;
        } else {
            self.index += 1;
        }
        let rel = poc - self.gop_poc;
        if rel != 0 {
            self.step = gcd(self.step, rel.abs());
            self.gop_step = gcd(self.gop_step, rel.abs());
        }
        let rank = rel.div_euclid(self.step);
        self.learned_depth = self.learned_depth.max(self.index.saturating_sub(rank)).min(16);
        let previous = self.last.replace(Last {
            known: match known {
                Known::Pts(v) | Known::Dts(v) => v,
            },
            rank,
        });
        match (known, previous) {
            // Stamps of arrival jitter: follow the mean spacing, not the last one.
            (Known::Dts(d), Some(l)) if d > l.known && d.checked_sub(l.known).is_some() => {
                self.duration = self.duration.saturating_mul(7).saturating_add(d - l.known) / 8;
            }
            (Known::Pts(p), Some(l)) if !reset && rank != l.rank => {
                let d = p.saturating_sub(l.known) / rank.saturating_sub(l.rank);
                if d > 0 {
                    self.duration = d;
                }
            }
            _ => {}
        }
        // Saturating: a hostile stream's POCs and times must not overflow the edge.
        let offset = rank.saturating_sub(self.index).saturating_add(self.depth()).saturating_mul(self.duration);
        self.finish(known, offset)
    }

    /// Applies `offset` (pts − dts) to the known time, keeping decode times increasing across
    /// the small errors of an estimate (a jump back of many frames is the source's own
    /// discontinuity, and passes).
    fn finish(&mut self, known: Known, offset: i64) -> Times {
        let times = match known {
            Known::Dts(dts) => Times { pts: dts.saturating_add(offset), dts },
            Known::Pts(pts) => {
                let derived = pts.saturating_sub(offset);
                let dts = match self.last_dts {
                    Some(prev)
                        if derived <= prev && prev.saturating_sub(derived) < self.duration.saturating_mul(16) =>
                    {
                        prev.saturating_add(1)
                    }
                    _ => derived,
                };
                Times { pts, dts }
            }
        };
        self.last_dts = Some(times.dts);
        times
    }

    fn h264_order(&mut self, access_unit: &[u8]) -> Order {
        for nal in nals(access_unit) {
            let Some(kind) = h264::nal_type(nal) else { continue };
            match kind {
                h264::NAL_SPS => {
                    let Ok(rbsp) = decode_nal(nal) else { continue };
                    if let Ok(sps) = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])) {
                        self.declared_depth = declared_h264_depth(&sps);
                        self.h264.put_seq_param_set(sps);
                    }
                }
                h264::NAL_PPS => {
                    let Ok(rbsp) = decode_nal(nal) else { continue };
                    if let Ok(pps) = PicParameterSet::from_bits(&self.h264, BitReader::new(&rbsp[..])) {
                        self.h264.put_pic_param_set(pps);
                    }
                }
                h264::NAL_SLICE | h264::NAL_IDR => return self.h264_slice(nal),
                _ => {}
            }
        }
        Order::Unknown
    }

    fn h264_slice(&mut self, nal: &[u8]) -> Order {
        let Ok(header) = NalHeader::new(nal[0]) else { return Order::Unknown };
        let Ok(rbsp) = decode_nal(&nal[..nal.len().min(SLICE_HEADER_BYTES)]) else { return Order::Unknown };
        let rbsp: Cow<'_, [u8]> = rbsp;
        let mut r = BitReader::new(&rbsp[..]);
        let Ok((slice, sps, _)) = SliceHeader::from_bits(&self.h264, &mut r, header, None) else {
            return Order::Unknown;
        };
        let max_lsb = match sps.pic_order_cnt {
            PicOrderCntType::TypeZero { log2_max_pic_order_cnt_lsb_minus4 } => {
                1i64 << (log2_max_pic_order_cnt_lsb_minus4 + 4)
            }
            PicOrderCntType::TypeTwo => return Order::AsDecoded,
            PicOrderCntType::TypeOne { .. } => return Order::Unknown,
        };
        let (lsb, bottom) = match slice.pic_order_cnt_lsb {
            Some(PicOrderCountLsb::Frame(lsb)) => (i64::from(lsb), 0),
            Some(PicOrderCountLsb::FieldsAbsolute { pic_order_cnt_lsb, delta_pic_order_cnt_bottom }) => {
                (i64::from(pic_order_cnt_lsb), i64::from(delta_pic_order_cnt_bottom))
            }
            _ => return Order::Unknown,
        };
        let idr = h264::nal_type(nal) == Some(h264::NAL_IDR);
        let (prev_msb, prev_lsb) = if idr { (0, 0) } else { self.h264_prev };
        let msb = poc_msb(prev_msb, prev_lsb, lsb, max_lsb);
        if header.nal_ref_idc() != 0 {
            self.h264_prev = (msb, lsb);
        }
        let top = msb + lsb;
        let poc = top.min(top + bottom);
        if idr { Order::Reset(poc) } else { Order::Next(poc) }
    }

    fn h265_order(&mut self, access_unit: &[u8]) -> Order {
        for nal in nals(access_unit) {
            let Some(kind) = h265::nal_type(nal) else { continue };
            match kind {
                h265::NAL_SPS => {
                    if let Ok((_, sps)) = h265::parse_sps_profile(nal) {
                        self.declared_depth = Some(i64::from(sps.max_num_reorder));
                        self.h265_sps[usize::from(sps.sps_id) & 15] = Some(sps);
                    }
                }
                h265::NAL_PPS => {
                    if let Ok(pps) = h265::parse_pps(nal) {
                        self.h265_pps[usize::from(pps.pps_id) & 63] = Some(pps);
                    }
                }
                k if h265::is_vcl(k) => {
                    let found = h265::parse_slice_order(
                        nal,
                        |id| self.h265_pps.get(usize::from(id)).copied().flatten(),
                        |id| self.h265_sps.get(usize::from(id)).copied().flatten(),
                    );
                    match found {
                        Ok(Some(slice)) => return self.h265_poc(nal, kind, slice),
                        Ok(None) => continue,
                        Err(_) => return Order::Unknown,
                    }
                }
                _ => {}
            }
        }
        Order::Unknown
    }

    fn h265_poc(&mut self, nal: &[u8], kind: u8, slice: h265::SliceOrder) -> Order {
        let Some(sps) =
            self.h265_pps[usize::from(slice.pps_id) & 63].and_then(|p| self.h265_sps[usize::from(p.sps_id) & 15])
        else {
            return Order::Unknown;
        };
        let max_lsb = 1i64 << sps.log2_max_poc_lsb;
        let lsb = i64::from(slice.poc_lsb);
        let idr = matches!(kind, h265::NAL_IDR_W_RADL | h265::NAL_IDR_N_LP);
        let bla = (16..=18).contains(&kind);
        let first_cra = kind == h265::NAL_CRA && self.h265_prev_tid0.is_none();
        let (poc, reset) = if idr {
            (0, true)
        } else if bla || first_cra {
            (lsb, true)
        } else {
            let prev = self.h265_prev_tid0.unwrap_or(0);
            let prev_lsb = prev.rem_euclid(max_lsb);
            (poc_msb(prev - prev_lsb, prev_lsb, lsb, max_lsb) + lsb, false)
        };
        let temporal_id = (nal[1] & 0x07).saturating_sub(1);
        // RADL, RASL and sub-layer non-reference pictures do not anchor the next POC.
        let leading = (6..=9).contains(&kind);
        let sub_layer_non_reference = kind < 16 && kind.is_multiple_of(2);
        if temporal_id == 0 && !leading && !sub_layer_non_reference {
            self.h265_prev_tid0 = Some(poc);
        }
        if reset { Order::Reset(poc) } else { Order::Next(poc) }
    }
}

/// The reorder depth an H.264 SPS declares or implies, if any.
fn declared_h264_depth(sps: &SeqParameterSet) -> Option<i64> {
    if let Some(b) = sps.vui_parameters.as_ref().and_then(|v| v.bitstream_restrictions.as_ref()) {
        return Some(i64::from(b.max_num_reorder_frames));
    }
    // POC type 2 outputs in decode order; Baseline has no B-slices.
    let baseline = u8::from(sps.profile_idc) == 66;
    (baseline || matches!(sps.pic_order_cnt, PicOrderCntType::TypeTwo)).then_some(0)
}

/// `PicOrderCntMsb` (H.264 §8.2.1.1, H.265 §8.3.1): the POC's high part, carried over from the
/// previous anchor picture and stepped when the low part wraps.
fn poc_msb(prev_msb: i64, prev_lsb: i64, lsb: i64, max_lsb: i64) -> i64 {
    if lsb < prev_lsb && prev_lsb - lsb >= max_lsb / 2 {
        prev_msb + max_lsb
    } else if lsb > prev_lsb && lsb - prev_lsb > max_lsb / 2 {
        prev_msb - max_lsb
    } else {
        prev_msb
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests;
