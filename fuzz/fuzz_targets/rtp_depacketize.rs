//! Fuzzes the RTP depacketizers with arbitrary packet sequences: they must never panic, and
//! never give out a frame larger than their cap.
#![no_main]

use mediamesh_media::Codec;
use mediamesh_media::rtp::{Depacketizer, RtpPacketIn};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let codec = [Codec::H264, Codec::H265, Codec::Aac, Codec::Pcma, Codec::Opus][usize::from(sel) % 5];
    let mut d = Depacketizer::new(codec, 8192);
    let mut out = Vec::new();
    let mut seq: u16 = 0;
    // Each packet: [len][flags][payload...]; flags bit 0 = marker, bit 1 = skip a sequence number.
    while rest.len() >= 2 {
        let (len, flags) = (usize::from(rest[0]), rest[1]);
        let body = &rest[2..(2 + len).min(rest.len())];
        seq = seq.wrapping_add(1 + u16::from(flags >> 1 & 1));
        let pkt = RtpPacketIn { sequence: seq, timestamp: i64::from(flags >> 2), marker: flags & 1 == 1, payload: body.to_vec().into() };
        let _ = d.push(pkt, &mut out);
        rest = &rest[(2 + len).min(rest.len())..];
    }
    assert!(out.iter().all(|f| f.data.len() <= 8192));
});
