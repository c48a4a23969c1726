//! Tracks, codecs and the parameters a decoder needs before the first frame.

use bytes::Bytes;

use crate::{MediaError, TrackId, aac, h264, h265};

/// The codecs mediamesh carries. Payloads are passed through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC video; payloads are Annex-B access units.
    H264,
    /// H.265 / HEVC video; payloads are Annex-B access units.
    H265,
    /// AAC audio; payloads are raw access units (no ADTS header).
    Aac,
    /// G.711 A-law audio.
    Pcma,
    /// G.711 µ-law audio.
    Pcmu,
    /// Opus audio; payloads are Opus packets.
    Opus,
}

impl Codec {
    /// The short lowercase name used in APIs and logs (`"h264"`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Aac => "aac",
            Codec::Pcma => "pcma",
            Codec::Pcmu => "pcmu",
            Codec::Opus => "opus",
        }
    }

    /// Video or audio.
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::H264 | Codec::H265 => TrackKind::Video,
            Codec::Aac | Codec::Pcma | Codec::Pcmu | Codec::Opus => TrackKind::Audio,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a track is video or audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Pictures.
    Video,
    /// Sound.
    Audio,
}

impl TrackKind {
    /// `"video"` or `"audio"`.
    pub fn name(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        }
    }
}

/// One track of a stream and its codec configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Track id, unique within the stream; frames name it.
    pub id: TrackId,
    /// The codec.
    pub codec: Codec,
    /// Timestamp units per second (90 000 for video, the sample rate for audio; Opus: 48 000).
    pub clock_rate: u32,
    /// Audio channels; 0 for video.
    pub channels: u16,
    /// Codec configuration. H.264: SPS and PPS; H.265: VPS, SPS and PPS (NAL units without
    /// start codes). AAC: the AudioSpecificConfig. G.711 and Opus: none.
    pub parameter_sets: Vec<Bytes>,
}

/// What a player needs to know about an audio track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioParams {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// RFC 6381 codec string (`mp4a.40.2`, `opus`), where one exists.
    pub codec_string: Option<String>,
}

/// What a decoder needs to know about a video track, derived from its parameter sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoParams {
    /// Picture width in pixels (after cropping).
    pub width: u32,
    /// Picture height in pixels (after cropping).
    pub height: u32,
    /// RFC 6381 codec string, e.g. `avc1.42c01f`, as MSE and HLS want it.
    pub codec_string: String,
}

impl TrackInfo {
    /// A video track with the given H.264 SPS and PPS (NAL units without start codes).
    pub fn h264(id: TrackId, sps: Bytes, pps: Bytes) -> Self {
        Self {
            id,
            codec: Codec::H264,
            clock_rate: crate::VIDEO_CLOCK_RATE,
            channels: 0,
            parameter_sets: vec![sps, pps],
        }
    }

    /// A video track with the given H.265 VPS, SPS and PPS (NAL units without start codes).
    pub fn h265(id: TrackId, vps: Bytes, sps: Bytes, pps: Bytes) -> Self {
        Self {
            id,
            codec: Codec::H265,
            clock_rate: crate::VIDEO_CLOCK_RATE,
            channels: 0,
            parameter_sets: vec![vps, sps, pps],
        }
    }

    /// An audio track. `config` is the AudioSpecificConfig for AAC, `None` otherwise.
    pub fn audio(id: TrackId, codec: Codec, clock_rate: u32, channels: u16, config: Option<Bytes>) -> Self {
        Self { id, codec, clock_rate, channels, parameter_sets: config.into_iter().collect() }
    }

    fn find_nal(&self, is: impl Fn(&[u8]) -> bool) -> Option<&Bytes> {
        self.parameter_sets.iter().find(|p| is(p))
    }

    /// Checks the configuration is complete for the video codec and derives its parameters.
    pub fn video_params(&self) -> Result<VideoParams, MediaError> {
        match self.codec {
            Codec::H264 => {
                let sps = self
                    .find_nal(|p| h264::nal_type(p) == Some(h264::NAL_SPS))
                    .ok_or_else(|| self.invalid("H.264 track has no SPS"))?;
                if self.find_nal(|p| h264::nal_type(p) == Some(h264::NAL_PPS)).is_none() {
                    return Err(self.invalid("H.264 track has no PPS"));
                }
                h264::parse_sps(sps)
            }
            Codec::H265 => {
                for (t, name) in [(h265::NAL_VPS, "VPS"), (h265::NAL_PPS, "PPS")] {
                    if self.find_nal(|p| h265::nal_type(p) == Some(t)).is_none() {
                        return Err(self.invalid(&format!("H.265 track has no {name}")));
                    }
                }
                let sps = self
                    .find_nal(|p| h265::nal_type(p) == Some(h265::NAL_SPS))
                    .ok_or_else(|| self.invalid("H.265 track has no SPS"))?;
                h265::parse_sps(sps)
            }
            other => Err(self.invalid(&format!("{other} is not a video codec"))),
        }
    }

    /// Checks the configuration is complete for the audio codec and derives its parameters.
    pub fn audio_params(&self) -> Result<AudioParams, MediaError> {
        if self.channels == 0 || self.channels > 8 {
            return Err(self.invalid(&format!("{} audio channels is outside 1..8", self.channels)));
        }
        match self.codec {
            Codec::Aac => {
                let asc =
                    self.parameter_sets.first().ok_or_else(|| self.invalid("AAC track has no AudioSpecificConfig"))?;
                let cfg = aac::parse_config(asc).map_err(|reason| self.invalid(&reason))?;
                if cfg.sample_rate != self.clock_rate {
                    return Err(self.invalid(&format!(
                        "AudioSpecificConfig says {} Hz but the track's clock rate is {}",
                        cfg.sample_rate, self.clock_rate
                    )));
                }
                Ok(AudioParams {
                    sample_rate: cfg.sample_rate,
                    channels: self.channels,
                    codec_string: Some(format!("mp4a.40.{}", cfg.object_type)),
                })
            }
            Codec::Pcma | Codec::Pcmu => {
                Ok(AudioParams { sample_rate: self.clock_rate, channels: self.channels, codec_string: None })
            }
            Codec::Opus => {
                if self.clock_rate != 48_000 {
                    return Err(self.invalid("Opus tracks use a 48000 Hz clock"));
                }
                Ok(AudioParams { sample_rate: 48_000, channels: self.channels, codec_string: Some("opus".into()) })
            }
            other => Err(self.invalid(&format!("{other} is not an audio codec"))),
        }
    }

    fn invalid(&self, reason: &str) -> MediaError {
        MediaError::InvalidTrack { track: self.id, reason: reason.to_owned() }
    }
}

/// The description of a stream sent before its first frame and again whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    /// The stream's tracks, in id order.
    pub tracks: Vec<TrackInfo>,
}

impl StreamHeader {
    /// The track with this id.
    pub fn track(&self, id: TrackId) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// The first video track.
    pub fn video(&self) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.codec.kind() == TrackKind::Video)
    }

    /// Whether a frame of `track` is a point where a new viewer can start: a keyframe of the
    /// video track, or any frame when the stream has no video.
    pub fn is_sync_point(&self, track: TrackId, keyframe: bool) -> bool {
        keyframe && self.video().is_none_or(|v| v.id == track)
    }

    /// Checks track ids are unique and every track's configuration is usable.
    pub fn validate(&self) -> Result<(), MediaError> {
        for (i, t) in self.tracks.iter().enumerate() {
            if self.tracks[..i].iter().any(|o| o.id == t.id) {
                return Err(t.invalid("duplicate track id"));
            }
            if t.clock_rate == 0 {
                return Err(t.invalid("clock rate is zero"));
            }
            match t.codec.kind() {
                TrackKind::Video => drop(t.video_params()?),
                TrackKind::Audio => drop(t.audio_params()?),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::tests::{PPS_320X240, SPS_320X240};

    #[test]
    fn h264_track_derives_dimensions_and_codec_string() {
        let t = TrackInfo::h264(0, Bytes::from_static(SPS_320X240), Bytes::from_static(PPS_320X240));
        let p = t.video_params().unwrap();
        assert_eq!((p.width, p.height), (320, 240));
        assert!(p.codec_string.starts_with("avc1."), "{}", p.codec_string);
    }

    #[test]
    fn missing_pps_is_an_error_naming_the_track() {
        let mut t = TrackInfo::h264(3, Bytes::from_static(SPS_320X240), Bytes::new());
        t.parameter_sets.truncate(1);
        let e = t.video_params().unwrap_err();
        assert!(e.to_string().contains("track 3"), "{e}");
    }

    #[test]
    fn audio_tracks_validate_their_parameters() {
        let aac = TrackInfo::audio(1, Codec::Aac, 48_000, 2, Some(Bytes::from_static(&[0x11, 0x90])));
        let p = aac.audio_params().unwrap();
        assert_eq!((p.sample_rate, p.channels, p.codec_string.as_deref()), (48_000, 2, Some("mp4a.40.2")));
        let wrong_rate = TrackInfo { clock_rate: 44_100, ..aac.clone() };
        assert!(wrong_rate.audio_params().unwrap_err().to_string().contains("48000 Hz"));
        let no_config = TrackInfo { parameter_sets: vec![], ..aac };
        assert!(no_config.audio_params().is_err());
        assert!(TrackInfo::audio(2, Codec::Pcma, 8000, 1, None).audio_params().is_ok());
        assert!(TrackInfo::audio(2, Codec::Opus, 8000, 2, None).audio_params().is_err());
        assert!(TrackInfo::audio(2, Codec::Pcmu, 8000, 0, None).audio_params().is_err());
    }

    #[test]
    fn sync_points_are_video_keyframes() {
        let v = TrackInfo::h264(0, Bytes::from_static(SPS_320X240), Bytes::from_static(PPS_320X240));
        let a = TrackInfo::audio(1, Codec::Pcma, 8000, 1, None);
        let av = StreamHeader { tracks: vec![v, a.clone()] };
        assert!(av.is_sync_point(0, true));
        assert!(!av.is_sync_point(1, true), "audio frames are not sync points when there is video");
        assert!(!av.is_sync_point(0, false));
        assert!(StreamHeader { tracks: vec![a] }.is_sync_point(1, true), "audio-only streams sync anywhere");
    }

    #[test]
    fn duplicate_track_ids_are_rejected() {
        let t = TrackInfo::h264(0, Bytes::from_static(SPS_320X240), Bytes::from_static(PPS_320X240));
        let h = StreamHeader { tracks: vec![t.clone(), t] };
        assert!(h.validate().is_err());
    }
}
