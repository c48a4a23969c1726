//! The edge's uplink report and the reasons it drops frames.

/// Why the edge dropped a frame instead of sending it. Every drop is counted under one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The source → tunnel queue was full.
    QueueFull,
    /// Dropped while waiting for a keyframe after an earlier drop broke the picture chain.
    AwaitingKeyframe,
    /// A non-reference frame shed because the uplink was congested.
    CongestionNonReference,
    /// Part of a group of pictures shed (up to the next keyframe) because the uplink was
    /// congested.
    CongestionGop,
    /// Older than the freshness bound by the time it could be sent.
    Stale,
    /// Queued while the data tunnel was down and superseded by a newer keyframe.
    Disconnected,
    /// Larger than the hub accepts (`max_frame_bytes`).
    TooLarge,
}

impl DropReason {
    /// Every reason, in wire order.
    pub const ALL: [DropReason; 7] = [
        DropReason::QueueFull,
        DropReason::AwaitingKeyframe,
        DropReason::CongestionNonReference,
        DropReason::CongestionGop,
        DropReason::Stale,
        DropReason::Disconnected,
        DropReason::TooLarge,
    ];

    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            DropReason::QueueFull => 1,
            DropReason::AwaitingKeyframe => 2,
            DropReason::CongestionNonReference => 3,
            DropReason::CongestionGop => 4,
            DropReason::Stale => 5,
            DropReason::Disconnected => 6,
            DropReason::TooLarge => 7,
        }
    }

    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.to_u8() == v)
    }

    /// The name used in logs, the API and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::AwaitingKeyframe => "awaiting_keyframe",
            DropReason::CongestionNonReference => "congestion_non_reference",
            DropReason::CongestionGop => "congestion_gop",
            DropReason::Stale => "stale",
            DropReason::Disconnected => "disconnected",
            DropReason::TooLarge => "too_large",
        }
    }

    /// The index of this reason in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        usize::from(self.to_u8() - 1)
    }
}

/// How hard the edge is shedding load on an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CongestionLevel {
    /// Everything is sent.
    #[default]
    Clear,
    /// Non-reference frames are dropped.
    DropNonReference,
    /// Whole groups of pictures are dropped, up to the next keyframe.
    DropGop,
}

impl CongestionLevel {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            CongestionLevel::Clear => 0,
            CongestionLevel::DropNonReference => 1,
            CongestionLevel::DropGop => 2,
        }
    }

    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => CongestionLevel::Clear,
            1 => CongestionLevel::DropNonReference,
            2 => CongestionLevel::DropGop,
            _ => return None,
        })
    }

    /// The name used in logs, the API and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            CongestionLevel::Clear => "clear",
            CongestionLevel::DropNonReference => "drop_non_reference",
            CongestionLevel::DropGop => "drop_gop",
        }
    }
}

/// Edge → hub (data), about once a second: the state of this stream's uplink, so the hub can
/// show and export what happens on the far side of the link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UplinkReport {
    /// Frames waiting to be sent.
    pub queue_frames: u32,
    /// Payload bytes waiting to be sent.
    pub queue_bytes: u64,
    /// How long the oldest waiting frame has waited, milliseconds.
    pub queue_delay_ms: u32,
    /// The edge's estimate of how long sent frames take to reach the hub beyond the base
    /// round trip (from Feedback), milliseconds.
    pub path_delay_ms: u32,
    /// Smoothed round-trip time of this tunnel's Ping/Pong, microseconds (0 before the first
    /// Pong).
    pub rtt_us: u32,
    /// Current shedding level.
    pub level: CongestionLevel,
    /// Data-tunnel connections made for this session (1 + reconnects).
    pub connects: u32,
    /// Frames dropped since the stream started, by reason (only non-zero reasons).
    pub drops: Vec<(DropReason, u64)>,
}
