//! Tracks, codecs and the parameters a decoder needs before the first frame.

use bytes::Bytes;

use crate::{MediaError, TrackId, h264};

/// The codecs mediamesh carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC video; payloads are Annex-B.
    H264,
}

impl Codec {
    /// The short lowercase name used in APIs and logs (`"h264"`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
        }
    }

    /// Whether this is a video codec.
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::H264 => TrackKind::Video,
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
    /// Timestamp units per second (90 000 for video).
    pub clock_rate: u32,
    /// Codec configuration. For H.264: the SPS and PPS NAL units, without start codes.
    pub parameter_sets: Vec<Bytes>,
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
        Self { id, codec: Codec::H264, clock_rate: crate::VIDEO_CLOCK_RATE, parameter_sets: vec![sps, pps] }
    }

    /// Checks the configuration is complete for the codec and derives the video parameters.
    pub fn video_params(&self) -> Result<VideoParams, MediaError> {
        match self.codec {
            Codec::H264 => {
                let sps = self
                    .parameter_sets
                    .iter()
                    .find(|p| h264::nal_type(p) == Some(h264::NAL_SPS))
                    .ok_or_else(|| self.invalid("H.264 track has no SPS"))?;
                if !self.parameter_sets.iter().any(|p| h264::nal_type(p) == Some(h264::NAL_PPS)) {
                    return Err(self.invalid("H.264 track has no PPS"));
                }
                h264::parse_sps(sps)
            }
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

    /// Checks track ids are unique and every track's configuration is usable.
    pub fn validate(&self) -> Result<(), MediaError> {
        for (i, t) in self.tracks.iter().enumerate() {
            if self.tracks[..i].iter().any(|o| o.id == t.id) {
                return Err(t.invalid("duplicate track id"));
            }
            if t.clock_rate == 0 {
                return Err(t.invalid("clock rate is zero"));
            }
            if t.codec.kind() == TrackKind::Video {
                t.video_params()?;
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
    fn duplicate_track_ids_are_rejected() {
        let t = TrackInfo::h264(0, Bytes::from_static(SPS_320X240), Bytes::from_static(PPS_320X240));
        let h = StreamHeader { tracks: vec![t.clone(), t] };
        assert!(h.validate().is_err());
    }
}
