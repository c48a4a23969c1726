//! H.264 (RFC 6184) and H.265 (RFC 7798) payload formats.

use bytes::{BufMut, Bytes, BytesMut};

use super::{DepacketizeError, DepacketizedFrame, RtpPacketIn, RtpPayload, Sequence};
use crate::annexb::{START_CODE, nals};
use crate::{h264, h265};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    H264,
    H265,
}

impl Syntax {
    fn header_len(self) -> usize {
        match self {
            Syntax::H264 => 1,
            Syntax::H265 => 2,
        }
    }

    fn nal_type(self, nal: &[u8]) -> Option<u8> {
        match self {
            Syntax::H264 => h264::nal_type(nal),
            Syntax::H265 => h265::nal_type(nal),
        }
    }
}

/// Packetizes an Annex-B access unit.
pub(super) fn packetize(syntax: Syntax, au: &Bytes, max: usize) -> Vec<RtpPayload> {
    let units: Vec<Bytes> = nals(au).filter(|n| n.len() >= syntax.header_len()).map(|n| au.slice_ref(n)).collect();
    let mut out = Vec::with_capacity(units.len() + au.len() / max);
    let mut group: Vec<Bytes> = Vec::new();
    let mut group_len = syntax.header_len();
    for nal in units {
        if nal.len() > max {
            flush_group(syntax, &mut group, &mut out);
            group_len = syntax.header_len();
            fragment(syntax, &nal, max, &mut out);
            continue;
        }
        if group_len + 2 + nal.len() > max {
            flush_group(syntax, &mut group, &mut out);
            group_len = syntax.header_len();
        }
        group_len += 2 + nal.len();
        group.push(nal);
    }
    flush_group(syntax, &mut group, &mut out);
    if let Some(last) = out.last_mut() {
        last.marker = true;
    }
    out
}

/// One NAL unit alone (zero-copy), or several in an aggregation packet (STAP-A / AP).
fn flush_group(syntax: Syntax, group: &mut Vec<Bytes>, out: &mut Vec<RtpPayload>) {
    match group.len() {
        0 => {}
        1 => out.push(RtpPayload::new(&[], group[0].clone(), false)),
        _ => {
            let mut b = BytesMut::with_capacity(group.iter().map(|n| n.len() + 2).sum::<usize>() + 2);
            match syntax {
                Syntax::H264 => {
                    // F is the OR of the F bits, NRI the highest NRI.
                    let f = group.iter().fold(0, |a, n| a | (n[0] & 0x80));
                    let nri = group.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
                    b.put_u8(f | nri | 24);
                }
                Syntax::H265 => {
                    let f = group.iter().fold(0, |a, n| a | (n[0] & 0x80));
                    let layer =
                        group.iter().map(|n| (u16::from(n[0] & 1) << 5) | u16::from(n[1] >> 3)).min().unwrap_or(0);
                    let tid = group.iter().map(|n| n[1] & 7).min().unwrap_or(1);
                    b.put_u8(f | (h265::NAL_AP << 1) | (layer >> 5) as u8);
                    b.put_u8((((layer & 0x1f) as u8) << 3) | tid);
                }
            }
            for n in group.iter() {
                b.put_u16(n.len() as u16);
                b.put_slice(n);
            }
            out.push(RtpPayload::new(&[], b.freeze(), false));
        }
    }
    group.clear();
}

/// Fragmentation units (FU-A / FU): the NAL header is replaced by 2–3 bytes of prefix, and the
/// body of each packet is a zero-copy slice of the NAL unit.
fn fragment(syntax: Syntax, nal: &Bytes, max: usize, out: &mut Vec<RtpPayload>) {
    let hl = syntax.header_len();
    let (prefix, t): ([u8; 3], u8) = match syntax {
        Syntax::H264 => ([(nal[0] & 0xe0) | 28, 0, 0], nal[0] & 0x1f),
        Syntax::H265 => ([(nal[0] & 0x81) | (h265::NAL_FU << 1), nal[1], 0], (nal[0] >> 1) & 0x3f),
    };
    let plen = hl + 1;
    let chunk = max - plen;
    let data = nal.slice(hl..);
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + chunk).min(data.len());
        let mut p = prefix;
        p[hl] = t | if pos == 0 { 0x80 } else { 0 } | if end == data.len() { 0x40 } else { 0 };
        out.push(RtpPayload::new(&p[..plen], data.slice(pos..end), false));
        pos = end;
    }
}

/// Reassembles access units.
#[derive(Debug)]
pub(super) struct Depacketizer {
    syntax: Syntax,
    max: usize,
    seq: Sequence,
    au: BytesMut,
    au_ts: Option<i64>,
    /// A fragmented NAL unit being reassembled.
    fu: Option<BytesMut>,
    /// The current access unit lost a packet; drop it at its end.
    broken: bool,
    /// A loss happened since the last frame given out.
    discontinuity: bool,
    keyframe: bool,
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

impl Depacketizer {
    pub(super) fn new(syntax: Syntax, max: usize) -> Self {
        Self {
            syntax,
            max,
            seq: Sequence::default(),
            au: BytesMut::new(),
            au_ts: None,
            fu: None,
            broken: false,
            discontinuity: false,
            keyframe: false,
            vps: None,
            sps: None,
            pps: None,
        }
    }

    pub(super) fn push(&mut self, pkt: RtpPacketIn, out: &mut Vec<DepacketizedFrame>) -> Result<(), DepacketizeError> {
        let err = |reason: String| DepacketizeError { sequence: pkt.sequence, reason };
        if self.seq.lost_before(pkt.sequence) {
            self.broken = true;
            self.discontinuity = true;
            self.fu = None;
        }
        // A new timestamp without a marker on the previous packet also ends an access unit.
        if self.au_ts.is_some_and(|t| t != pkt.timestamp) {
            self.finish(out);
        }
        self.au_ts = Some(pkt.timestamp);
        let result = self.unpack(&pkt.payload).map_err(err);
        if result.is_err() {
            self.broken = true;
            self.discontinuity = true;
            self.fu = None;
        }
        if pkt.marker {
            self.finish(out);
        }
        result
    }

    fn unpack(&mut self, p: &Bytes) -> Result<(), String> {
        let hl = self.syntax.header_len();
        if p.len() < hl {
            return Err(format!("{} bytes is shorter than a NAL unit header", p.len()));
        }
        let t = self.syntax.nal_type(p).unwrap_or(0);
        match (self.syntax, t) {
            (Syntax::H264, 1..=23) | (Syntax::H265, 0..=47) => self.add_nal(p),
            (Syntax::H264, 24) | (Syntax::H265, 48) => {
                let mut rest = &p[hl..];
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err("aggregation packet ends inside a size field".into());
                    }
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    if n < hl || n > rest.len() - 2 {
                        return Err(format!("aggregated NAL unit of {n} bytes does not fit"));
                    }
                    self.add_nal(&p.slice_ref(&rest[2..2 + n]))?;
                    rest = &rest[2 + n..];
                }
                Ok(())
            }
            (Syntax::H264, 28) | (Syntax::H265, 49) => {
                if p.len() < hl + 2 {
                    return Err("fragmentation unit without data".into());
                }
                let fu = p[hl];
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start {
                    let mut nal = BytesMut::with_capacity(p.len() * 4);
                    match self.syntax {
                        Syntax::H264 => nal.put_u8((p[0] & 0xe0) | (fu & 0x1f)),
                        Syntax::H265 => {
                            nal.put_u8((p[0] & 0x81) | ((fu & 0x3f) << 1));
                            nal.put_u8(p[1]);
                        }
                    }
                    self.fu = Some(nal);
                }
                let Some(nal) = self.fu.as_mut() else {
                    return Err("fragment without its start (lost)".into());
                };
                if nal.len() + p.len() > self.max {
                    self.fu = None;
                    return Err(format!("fragmented NAL unit exceeds {} bytes", self.max));
                }
                nal.put_slice(&p[hl + 1..]);
                if end && let Some(nal) = self.fu.take() {
                    self.add_nal(&nal.freeze())?;
                }
                Ok(())
            }
            (_, t) => Err(format!("unsupported NAL unit / packet type {t}")),
        }
    }

    fn add_nal(&mut self, nal: &Bytes) -> Result<(), String> {
        if self.au.len() + START_CODE.len() + nal.len() > self.max {
            return Err(format!("access unit exceeds {} bytes", self.max));
        }
        self.au.put_slice(&START_CODE);
        self.au.put_slice(nal);
        let t = self.syntax.nal_type(nal).unwrap_or(0);
        match self.syntax {
            Syntax::H264 => match t {
                h264::NAL_IDR => self.keyframe = true,
                h264::NAL_SPS => self.sps = Some(nal.clone()),
                h264::NAL_PPS => self.pps = Some(nal.clone()),
                _ => {}
            },
            Syntax::H265 => match t {
                t if h265::is_irap(t) => self.keyframe = true,
                h265::NAL_VPS => self.vps = Some(nal.clone()),
                h265::NAL_SPS => self.sps = Some(nal.clone()),
                h265::NAL_PPS => self.pps = Some(nal.clone()),
                _ => {}
            },
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<DepacketizedFrame>) {
        let data = self.au.split().freeze();
        let frame = DepacketizedFrame {
            timestamp: self.au_ts.take().unwrap_or(0),
            data,
            keyframe: std::mem::take(&mut self.keyframe),
            discontinuity: self.discontinuity,
            vps: self.vps.take(),
            sps: self.sps.take(),
            pps: self.pps.take(),
        };
        self.fu = None;
        if std::mem::take(&mut self.broken) || frame.data.is_empty() {
            return;
        }
        self.discontinuity = false;
        out.push(frame);
    }
}
