//! The media model shared by every mediamesh component.
//!
//! This crate owns what a frame *is*, independent of how it travels:
//!
//! - [`Frame`]: one access unit of one track, with its timestamps, the capture wall-clock time
//!   (for end-to-end latency) and a reference-counted payload ([`bytes::Bytes`]) so fan-out
//!   never copies media;
//! - [`TrackInfo`] / [`StreamHeader`]: what a stream carries and the codec parameters a decoder
//!   needs before the first frame;
//! - [`h264`] and [`h265`]: NAL units in Annex-B form, an incremental access-unit splitter for
//!   byte streams (ffmpeg's stdout), keyframe detection, SPS parsing, and (H.264) the SEI message
//!   our test pattern uses to carry its frame counter;
//! - [`aac`]: the AudioSpecificConfig;
//! - [`fmp4`]: fragmented MP4 (CMAF) init segments and fragments for MSE and LL-HLS;
//! - [`rtp`]: RTP payload formats (packetizing once per frame for RTSP viewers, depacketizing
//!   what cameras send), RTCP sender reports, SDP descriptions.
//!
//! Nothing here performs I/O, spawns tasks or reads a clock: callers pass times in.

#![forbid(unsafe_code)]

pub mod aac;
pub mod annexb;
mod codec;
mod error;
pub mod fmp4;
mod frame;
pub mod fuzz;
pub mod h264;
pub mod h265;
pub mod reorder;
pub mod rtp;

pub use codec::{AudioParams, Codec, StreamHeader, TrackInfo, TrackKind, VideoParams};
pub use error::MediaError;
pub use frame::{Frame, FrameFlags, TrackId};

/// The RTP/MPEG clock rate used for video timestamps, in Hz.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
