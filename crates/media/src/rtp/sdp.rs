//! The SDP lines that describe a track: payload type, `a=rtpmap` and `a=fmtp`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::{Codec, TrackInfo, h264, h265};

/// How a track is described in SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpMedia {
    /// `video` or `audio`.
    pub media: &'static str,
    /// RTP payload type.
    pub payload_type: u8,
    /// The `a=rtpmap:` value after the payload type, e.g. `H264/90000`.
    pub rtpmap: String,
    /// The `a=fmtp:` value after the payload type, if the codec has one.
    pub fmtp: Option<String>,
}

/// A track's RTP payload type: 96 + the track id, except G.711 at 8 kHz mono, which uses its
/// static type (8 PCMA, 0 PCMU).
pub fn payload_type(track: &TrackInfo) -> u8 {
    match track.codec {
        Codec::Pcma | Codec::Pcmu if track.clock_rate == 8000 && track.channels == 1 => {
            if track.codec == Codec::Pcma {
                8
            } else {
                0
            }
        }
        _ => 96 + track.id.min(31),
    }
}

/// The SDP description of a track, with its [`payload_type`].
pub fn describe(track: &TrackInfo) -> SdpMedia {
    let payload_type = payload_type(track);
    let find = |t: u8, of: fn(&[u8]) -> Option<u8>| track.parameter_sets.iter().find(|p| of(p) == Some(t));
    let b64 = |p: Option<&bytes::Bytes>| p.map(|p| B64.encode(p)).unwrap_or_default();
    match track.codec {
        Codec::H264 => {
            let sps = find(h264::NAL_SPS, h264::nal_type);
            let pps = find(h264::NAL_PPS, h264::nal_type);
            let profile = sps.filter(|s| s.len() >= 4).map(|s| format!("{:02X}{:02X}{:02X}", s[1], s[2], s[3]));
            let mut fmtp = String::from("packetization-mode=1");
            if let Some(p) = profile {
                fmtp.push_str(&format!(";profile-level-id={p}"));
            }
            fmtp.push_str(&format!(";sprop-parameter-sets={},{}", b64(sps), b64(pps)));
            SdpMedia { media: "video", payload_type, rtpmap: "H264/90000".into(), fmtp: Some(fmtp) }
        }
        Codec::H265 => {
            let fmtp = format!(
                "sprop-vps={};sprop-sps={};sprop-pps={}",
                b64(find(h265::NAL_VPS, h265::nal_type)),
                b64(find(h265::NAL_SPS, h265::nal_type)),
                b64(find(h265::NAL_PPS, h265::nal_type))
            );
            SdpMedia { media: "video", payload_type, rtpmap: "H265/90000".into(), fmtp: Some(fmtp) }
        }
        Codec::Aac => {
            let config: String = track
                .parameter_sets
                .first()
                .map(|c| c.iter().map(|b| format!("{b:02X}")).collect())
                .unwrap_or_default();
            SdpMedia {
                media: "audio",
                payload_type,
                rtpmap: format!("MPEG4-GENERIC/{}/{}", track.clock_rate, track.channels),
                fmtp: Some(format!(
                    "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config={config}"
                )),
            }
        }
        Codec::Pcma | Codec::Pcmu => {
            let name = if track.codec == Codec::Pcma { "PCMA" } else { "PCMU" };
            let rtpmap = if track.channels > 1 {
                format!("{name}/{}/{}", track.clock_rate, track.channels)
            } else {
                format!("{name}/{}", track.clock_rate)
            };
            SdpMedia { media: "audio", payload_type, rtpmap, fmtp: None }
        }
        Codec::Opus => SdpMedia {
            media: "audio",
            payload_type,
            // RFC 7587: always "opus/48000/2"; mono or stereo is signalled in fmtp.
            rtpmap: "opus/48000/2".into(),
            fmtp: Some(format!("sprop-stereo={}", u8::from(track.channels > 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::h264::tests::{PPS_320X240, SPS_320X240};

    #[test]
    fn h264_fmtp_carries_profile_and_parameter_sets() {
        let t = TrackInfo::h264(0, Bytes::from_static(SPS_320X240), Bytes::from_static(PPS_320X240));
        let d = describe(&t);
        assert_eq!((d.media, d.payload_type, d.rtpmap.as_str()), ("video", 96, "H264/90000"));
        let f = d.fmtp.unwrap();
        assert!(f.contains("profile-level-id=42C00D"), "{f}");
        assert!(f.contains("sprop-parameter-sets=Z0LADdoFB+wEQAAAAwBAAAAMg8UKqA==,aM4PyA=="), "{f}");
    }

    #[test]
    fn audio_descriptions() {
        let aac = TrackInfo::audio(1, Codec::Aac, 48_000, 2, Some(Bytes::from_static(&[0x11, 0x90])));
        let d = describe(&aac);
        assert_eq!(d.rtpmap, "MPEG4-GENERIC/48000/2");
        assert!(d.fmtp.unwrap().ends_with("config=1190"));
        assert_eq!(describe(&TrackInfo::audio(1, Codec::Pcma, 8000, 1, None)).payload_type, 8);
        assert_eq!(describe(&TrackInfo::audio(1, Codec::Pcmu, 8000, 1, None)).payload_type, 0);
        assert_eq!(describe(&TrackInfo::audio(2, Codec::Pcmu, 16000, 1, None)).payload_type, 98);
        assert_eq!(describe(&TrackInfo::audio(1, Codec::Opus, 48000, 1, None)).fmtp.as_deref(), Some("sprop-stereo=0"));
    }
}
