//! AAC in RTP: RFC 3640 `mpeg4-generic`, mode AAC-hbr (13-bit AU size, 3-bit index).

use bytes::{BufMut, Bytes, BytesMut};

use super::{DepacketizeError, DepacketizedFrame, RtpPacketIn, RtpPayload, Sequence};

/// Samples per AAC-LC access unit, for timestamps of several AUs in one packet.
const SAMPLES_PER_AU: i64 = 1024;

/// One AU per packet: AU-headers-length (16 bits), one AU header, the AU (fragmented over
/// several packets if it is larger than the payload budget).
pub(super) fn packetize(au: &Bytes, max: usize) -> Vec<RtpPayload> {
    let size = au.len().min(0x1fff) as u16;
    let prefix = [0x00, 0x10, (size >> 5) as u8, ((size & 0x1f) << 3) as u8];
    let chunk = max - prefix.len();
    let mut out = Vec::with_capacity(au.len() / chunk + 1);
    let mut pos = 0;
    loop {
        let end = (pos + chunk).min(au.len());
        out.push(RtpPayload::new(&prefix, au.slice(pos..end), end == au.len()));
        pos = end;
        if pos >= au.len() {
            return out;
        }
    }
}

#[derive(Debug)]
pub(super) struct Depacketizer {
    max: usize,
    seq: Sequence,
    /// An AU being reassembled from fragments: its declared size and the bytes so far.
    fragment: Option<(usize, BytesMut)>,
    discontinuity: bool,
}

impl Depacketizer {
    pub(super) fn new(max: usize) -> Self {
        Self { max, seq: Sequence::default(), fragment: None, discontinuity: false }
    }

    pub(super) fn push(&mut self, pkt: RtpPacketIn, out: &mut Vec<DepacketizedFrame>) -> Result<(), DepacketizeError> {
        let err = |reason: &str| DepacketizeError { sequence: pkt.sequence, reason: reason.into() };
        if self.seq.lost_before(pkt.sequence) {
            self.fragment = None;
            self.discontinuity = true;
        }
        let p = &pkt.payload;
        if p.len() < 2 {
            return Err(err("no AU-headers-length"));
        }
        let header_bits = usize::from(u16::from_be_bytes([p[0], p[1]]));
        if header_bits % 16 != 0 || header_bits == 0 {
            return Err(err("AU headers are not 16-bit AAC-hbr headers"));
        }
        let header_bytes = header_bits / 8;
        if 2 + header_bytes > p.len() {
            return Err(err("AU headers run past the packet"));
        }
        let headers = &p[2..2 + header_bytes];
        let mut data = p.slice(2 + header_bytes..);
        let count = headers.len() / 2;
        for (i, h) in headers.chunks_exact(2).enumerate() {
            let size = usize::from(u16::from_be_bytes([h[0], h[1]]) >> 3);
            let ts = pkt.timestamp + i as i64 * SAMPLES_PER_AU;
            if size > self.max {
                return Err(err("AU larger than the frame cap"));
            }
            if count == 1 && size > data.len() {
                // A fragment of a large AU; the rest follows in packets with the same header.
                let (want, buf) = self.fragment.get_or_insert_with(|| (size, BytesMut::with_capacity(size)));
                if *want != size || buf.len() + data.len() > size {
                    self.fragment = None;
                    return Err(err("inconsistent AU fragments"));
                }
                buf.put_slice(&data);
                if buf.len() == size {
                    let (_, buf) = self.fragment.take().unwrap_or_default();
                    self.emit(ts, buf.freeze(), out);
                } else if pkt.marker {
                    self.fragment = None;
                    return Err(err("AU fragments ended early"));
                }
                return Ok(());
            }
            if size > data.len() {
                return Err(err("AU runs past the packet"));
            }
            let au = data.split_to(size);
            self.emit(ts, au, out);
        }
        Ok(())
    }

    fn emit(&mut self, timestamp: i64, data: Bytes, out: &mut Vec<DepacketizedFrame>) {
        out.push(DepacketizedFrame {
            timestamp,
            data,
            keyframe: true,
            discontinuity: std::mem::take(&mut self.discontinuity),
            vps: None,
            sps: None,
            pps: None,
        });
    }
}
