//! Errors of the media layer.

/// Something about media data was wrong or unsupported.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// An H.264 sequence parameter set could not be parsed.
    #[error("invalid H.264 SPS ({len} bytes): {reason}")]
    InvalidSps {
        /// Length of the NAL unit that failed to parse.
        len: usize,
        /// What the parser reported.
        reason: String,
    },
    /// A NAL unit was empty or its header was malformed.
    #[error("invalid NAL unit header byte {header:#04x}")]
    InvalidNalHeader {
        /// The offending header byte.
        header: u8,
    },
    /// A track description is missing data its codec requires.
    #[error("track {track}: {reason}")]
    InvalidTrack {
        /// The track id.
        track: u8,
        /// What is missing or wrong.
        reason: String,
    },
    /// An access unit grew beyond the configured cap before it ended.
    #[error("access unit exceeds {cap} bytes; the byte stream is not H.264 or is corrupt")]
    AccessUnitTooLarge {
        /// The cap in bytes.
        cap: usize,
    },
}
