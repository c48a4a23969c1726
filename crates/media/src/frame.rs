//! One access unit of one track.

use bytes::Bytes;

/// Identifies a track within a stream (0 is the video track of a camera).
pub type TrackId = u8;

/// Per-frame flags, as carried on the wire (one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// The frame can be decoded without any earlier frame (an IDR picture for H.264).
    pub const KEYFRAME: u8 = 0x01;
    /// Frames were lost or dropped immediately before this one.
    pub const DISCONTINUITY: u8 = 0x02;
    /// All flags this version knows; a peer that sets any other bit is rejected.
    pub const KNOWN: u8 = Self::KEYFRAME | Self::DISCONTINUITY;

    /// Flags from their wire byte, or `None` if an unknown bit is set.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits & !Self::KNOWN == 0).then_some(Self(bits))
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Flags for a keyframe (`true`) or a dependent frame (`false`).
    pub fn keyframe(is_key: bool) -> Self {
        Self(if is_key { Self::KEYFRAME } else { 0 })
    }

    /// Whether the keyframe bit is set.
    pub fn is_keyframe(self) -> bool {
        self.0 & Self::KEYFRAME != 0
    }

    /// Whether the discontinuity bit is set.
    pub fn is_discontinuity(self) -> bool {
        self.0 & Self::DISCONTINUITY != 0
    }

    /// These flags with the discontinuity bit set.
    pub fn with_discontinuity(self) -> Self {
        Self(self.0 | Self::DISCONTINUITY)
    }
}

/// One access unit (a whole picture for video) of one track.
///
/// Cloning a frame is cheap: the payload is reference-counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The track this frame belongs to.
    pub track: TrackId,
    /// Keyframe / discontinuity flags.
    pub flags: FrameFlags,
    /// Sequence number assigned by the source, one per frame it produced (including frames it
    /// later dropped), so a receiver can count gaps.
    pub seq: u64,
    /// Presentation timestamp in the track's clock rate.
    pub pts: i64,
    /// Decoding timestamp in the track's clock rate.
    pub dts: i64,
    /// Capture wall-clock time, microseconds since the Unix epoch, as stamped by the edge.
    pub capture_us: u64,
    /// The payload. For H.264: Annex-B NAL units, each after a 4-byte start code.
    pub payload: Bytes,
}

impl Frame {
    /// Whether this frame is a keyframe.
    pub fn is_keyframe(&self) -> bool {
        self.flags.is_keyframe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_flag_bits_are_rejected() {
        assert!(FrameFlags::from_bits(0x80).is_none());
        assert!(FrameFlags::from_bits(0x04).is_none());
        let f = FrameFlags::from_bits(0x03).unwrap();
        assert!(f.is_keyframe() && f.is_discontinuity());
    }

    #[test]
    fn discontinuity_keeps_keyframe() {
        let f = FrameFlags::keyframe(true).with_discontinuity();
        assert!(f.is_keyframe());
        assert_eq!(f.bits(), 0x03);
    }
}
