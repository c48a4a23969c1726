//! RTCP sender reports (RFC 3550 §6.4.1), so clients can map RTP time to wall-clock time.

/// Seconds between 1900 (NTP epoch) and 1970 (Unix epoch).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp from microseconds since the Unix epoch.
pub fn ntp_from_unix_micros(us: u64) -> u64 {
    let secs = us / 1_000_000 + NTP_UNIX_OFFSET;
    let frac = ((us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// A compound RTCP packet: a sender report with no report blocks, then an SDES with a CNAME.
pub fn sender_report(ssrc: u32, ntp: u64, rtp_timestamp: u32, packets: u32, octets: u32, cname: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(28 + 12 + cname.len());
    // SR: V=2, P=0, RC=0, PT=200, length 6 (28 bytes).
    b.extend_from_slice(&[0x80, 200, 0, 6]);
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(&ntp.to_be_bytes());
    b.extend_from_slice(&rtp_timestamp.to_be_bytes());
    b.extend_from_slice(&packets.to_be_bytes());
    b.extend_from_slice(&octets.to_be_bytes());
    // SDES: one chunk (SSRC, CNAME item, end, padding to 4 bytes).
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let chunk_len = 4 + 2 + name.len() + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    let words = (4 + padded) / 4 - 1;
    b.extend_from_slice(&[0x81, 202]);
    b.extend_from_slice(&(words as u16).to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.push(1);
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b.resize(b.len() + padded - (chunk_len - 1), 0);
    b
}

/// An RTCP BYE for one source (the stream has ended).
pub fn bye(ssrc: u32) -> [u8; 8] {
    let s = ssrc.to_be_bytes();
    [0x81, 203, 0, 1, s[0], s[1], s[2], s[3]]
}

/// Whether a buffer looks like an RTCP compound packet (version 2, packet type 200–206).
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (200..=206).contains(&data[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_layout() {
        let sr = sender_report(0x1234_5678, ntp_from_unix_micros(1_500_000), 90_000, 10, 1000, "mediamesh");
        assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
        assert_eq!(u32::from_be_bytes(sr[8..12].try_into().unwrap()), (NTP_UNIX_OFFSET + 1) as u32);
        assert_eq!(u32::from_be_bytes(sr[12..16].try_into().unwrap()), 1 << 31, "half a second");
        assert_eq!(sr.len() % 4, 0);
        let sdes_words = u16::from_be_bytes([sr[30], sr[31]]) as usize;
        assert_eq!(28 + 4 + sdes_words * 4, sr.len(), "the SDES length field covers the rest");
        assert!(is_rtcp(&sr));
        assert!(!is_rtcp(&[0x80, 96, 0, 0, 0, 0, 0, 0]));
    }
}
