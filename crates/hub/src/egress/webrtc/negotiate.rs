//! What a WebRTC viewer is offered: the plan from the stream's header (the camera's video codec
//! and profile, the audio that can pass through), and the negotiation of one offer with str0m.

use std::time::Instant;

use mediamesh_media::{Codec, TrackId};
use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{Mid, Pt};
use str0m::net::TcpType;
use str0m::rtp::Extension;
use str0m::{Candidate, Rtc, RtcConfig};

use super::{ABS_CAPTURE_TIME_ID, RTX_PACKETS, WebRtc, WhepError};
use crate::session::log::HeaderEntry;

/// What of a stream a WebRTC viewer can get, from its header (unknown before the edge sent it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// The camera's video codec (H.264 when not known yet).
    pub(super) video: Option<Codec>,
    /// The camera's H.264 `profile-level-id`.
    pub(super) profile: Option<u32>,
    /// The camera's H.265 profile, tier and level.
    pub(super) h265: Option<(u8, u8, u8)>,
    /// The audio track that passes through, and its codec.
    pub(super) audio: Option<(TrackId, Codec)>,
    /// An audio codec WebRTC cannot carry.
    pub(super) left_out: Option<Codec>,
}

impl Plan {
    pub(super) fn new(header: Option<&HeaderEntry>) -> Self {
        let Some(h) = header else { return Self::default() };
        let video = h.header.video().map(|v| v.codec);
        let codec_string = h.video.as_ref().map(|v| v.codec_string.as_str());
        let profile = codec_string
            .filter(|_| video == Some(Codec::H264))
            .and_then(|s| s.strip_prefix("avc1."))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        let h265 = codec_string.filter(|_| video == Some(Codec::H265)).and_then(h265_profile_tier_level);
        let audio = h.header.tracks.iter().find(|t| t.codec.kind() == mediamesh_media::TrackKind::Audio);
        let (audio, left_out) = match audio.map(|t| (t.id, t.codec)) {
            Some((id, c @ (Codec::Opus | Codec::Pcmu | Codec::Pcma))) => (Some((id, c)), None),
            Some((_, c)) => (None, Some(c)),
            None => (None, None),
        };
        Self { video, profile, h265, audio, left_out }
    }

    #[cfg(test)]
    fn for_video(video: Codec) -> Self {
        Self { video: Some(video), ..Self::default() }
    }

    /// The video codec, as an error names it.
    pub(super) fn video_name(&self) -> &'static str {
        if self.video == Some(Codec::H265) { "H.265" } else { "H.264 (packetization-mode=1)" }
    }

    /// What to offer for the video, in turn: the camera's profile alone, then (H.264 only) the
    /// profiles browsers decode anyway.
    pub(super) fn video_offers(&self) -> Vec<VideoOffer> {
        // Constrained Baseline, Main and High.
        const PROFILES: [u32; 4] = [0x42e01f, 0x42001f, 0x4d001f, 0x64001f];
        match self.video {
            Some(Codec::H265) => vec![VideoOffer::H265(self.h265.unwrap_or((1, 0, 93)))],
            _ => self
                .profile
                .map(|p| VideoOffer::H264(vec![p]))
                .into_iter()
                .chain([VideoOffer::H264(PROFILES.to_vec())])
                .collect(),
        }
    }
}

/// Profile, tier and level from an RFC 6381 HEVC codec string (`hvc1.1.6.L93.B0`).
fn h265_profile_tier_level(s: &str) -> Option<(u8, u8, u8)> {
    let mut parts = s.strip_prefix("hvc1.").or_else(|| s.strip_prefix("hev1."))?.split('.');
    let profile = parts.next()?.trim_start_matches(|c: char| c.is_ascii_alphabetic()).parse().ok()?;
    let tier_level = parts.nth(1)?;
    let tier = match tier_level.chars().next()? {
        'L' => 0,
        'H' => 1,
        _ => return None,
    };
    Some((profile, tier, tier_level.get(1..)?.parse().ok()?))
}

/// One way of offering the video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum VideoOffer {
    /// H.264 with these `profile-level-id`s (packetization-mode 1).
    H264(Vec<u32>),
    /// H.265 with this profile, tier and level.
    H265((u8, u8, u8)),
}

/// Where a viewer's audio goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct AudioOut {
    pub(super) track: TrackId,
    pub(super) mid: Mid,
    pub(super) pt: Pt,
}

/// The `a=mid` of the first m-line of `kind` (`video`, `audio`) of an SDP.
pub(super) fn mid_of(sdp: &str, kind: &str) -> Option<Mid> {
    let mut in_kind = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_kind = m.strip_prefix(kind).is_some_and(|rest| rest.starts_with(' '));
        } else if in_kind && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(Mid::from(mid.trim()));
        }
    }
    None
}

/// The first payload type on `mid`, in the browser's order of preference, whose codec `wants`.
pub(super) fn payload_type(rtc: &Rtc, mid: Mid, wants: impl Fn(RtcCodec) -> bool) -> Option<Pt> {
    let media = rtc.media(mid)?;
    if media.disabled() {
        return None;
    }
    let params = rtc.codec_config().params();
    media.remote_pts().iter().copied().find(|pt| params.iter().any(|p| p.pt() == *pt && wants(p.spec().codec)))
}

/// str0m's name for an audio codec that passes through.
pub(super) fn rtc_codec(c: Codec) -> RtcCodec {
    match c {
        Codec::Pcmu => RtcCodec::PCMU,
        Codec::Pcma => RtcCodec::PCMA,
        _ => RtcCodec::Opus,
    }
}

impl WebRtc {
    /// Answers `offer` with H.264 in `profiles` (`profile-level-id`s) and the plan's audio:
    /// the peer connection, the answer, the video's mid and payload type.
    pub(super) fn negotiate(
        &self,
        offer: &str,
        ufrag: &str,
        pass: &str,
        plan: &Plan,
        video: &VideoOffer,
    ) -> Result<(Rtc, String, Mid, Pt), WhepError> {
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(str0m::IceCreds { ufrag: ufrag.to_owned(), pass: pass.to_owned() })
            .set_extension(ABS_CAPTURE_TIME_ID, Extension::AbsoluteCaptureTime)
            .set_send_buffer_video(RTX_PACKETS)
            .clear_codecs();
        config = match plan.audio {
            Some((_, Codec::Opus)) => config.enable_opus(true, false),
            Some((_, Codec::Pcmu)) => config.enable_pcmu(true, false),
            Some((_, Codec::Pcma)) => config.enable_pcma(true, false),
            _ => config,
        };
        let codec = match video {
            VideoOffer::H264(profiles) => {
                for (i, id) in profiles.iter().enumerate() {
                    // Dynamic payload types 96.., each with its retransmission type after it.
                    let pt = 96 + 2 * i as u8;
                    config.codec_config().add_h264(pt.into(), Some((pt + 1).into()), true, *id);
                }
                RtcCodec::H264
            }
            VideoOffer::H265((profile, tier, level)) => {
                config.codec_config().add_h265(96.into(), Some(97.into()), *profile, *tier, *level);
                RtcCodec::H265
            }
        };
        let mut rtc = config.build(Instant::now());
        for c in &self.candidates {
            if let Ok(c) = Candidate::host(*c, "udp") {
                rtc.add_local_candidate(c);
            }
            // Passive: the browser connects to it (its priority is below UDP's).
            if self.has_tcp
                && let Ok(c) = Candidate::builder().tcp().host(*c).tcptype(TcpType::Passive).build()
            {
                rtc.add_local_candidate(c);
            }
        }
        // str0m asserts things about offers it parsed (a payload type claimed twice panics), so
        // a hostile offer must not take the handler down with it.
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| WhepError::BadSdp(e.to_string()))?;
        let accepted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)))
            .map_err(|_| WhepError::Refused("str0m could not negotiate this offer".into()))?;
        let sdp = accepted.map_err(|e| WhepError::Refused(e.to_string()))?.to_sdp_string();
        // The video m-line (str0m announces it only once running) and the payload type the
        // browser prefers among ours.
        let mid = mid_of(&sdp, "video").ok_or(WhepError::NoCodec(plan.video_name()))?;
        let pt = payload_type(&rtc, mid, |c| c == codec).ok_or(WhepError::NoCodec(plan.video_name()))?;
        Ok((rtc, sdp, mid, pt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hevc_codec_strings_give_profile_tier_and_level() {
        assert_eq!(h265_profile_tier_level("hvc1.1.6.L93.B0"), Some((1, 0, 93)));
        assert_eq!(h265_profile_tier_level("hvc1.2.4.H120.90"), Some((2, 1, 120)));
        assert_eq!(h265_profile_tier_level("hev1.A1.6.L60"), Some((1, 0, 60)));
        assert_eq!(h265_profile_tier_level("avc1.42e01f"), None);
        assert_eq!(h265_profile_tier_level("hvc1.1.6.X93"), None);
        assert_eq!(h265_profile_tier_level("hvc1.1"), None);
    }

    #[test]
    fn an_h265_camera_is_offered_in_its_own_profile_and_h264_falls_back() {
        let p = Plan { h265: Some((2, 0, 120)), ..Plan::for_video(Codec::H265) };
        assert_eq!(p.video_offers(), vec![VideoOffer::H265((2, 0, 120))]);
        let p = Plan { profile: Some(0x640028), ..Plan::for_video(Codec::H264) };
        let offers = p.video_offers();
        assert_eq!(offers[0], VideoOffer::H264(vec![0x640028]), "the camera's profile first");
        assert!(matches!(&offers[1], VideoOffer::H264(all) if all.len() == 4));
        assert_eq!(Plan::default().video_offers().len(), 1, "before the header: the common profiles");
    }
}
