//! The WebSocket viewer format's packager: each frame's message prefix, and the header event,
//! built once per stream for every WebSocket viewer.

use std::sync::Arc;

use bytes::Bytes;

use super::format::{encode_frame_prefix, header_frame};
use crate::session::StreamKey;
use crate::session::log::{FrameFormat, HeaderEntry, LogEntry, PerFrame};

/// The WebSocket packaging of one stream.
#[derive(Debug)]
pub struct WsFormat {
    key: StreamKey,
    /// The codec parameters of the last frame, and their header event.
    header: Option<(Arc<HeaderEntry>, Bytes)>,
}

/// The attached WebSocket packager of a stream.
pub type WsPackager = PerFrame<WsFormat>;

/// A frame as WebSocket viewers are sent it.
#[derive(Debug)]
pub struct WsFrame {
    /// The header event for the frame's codec parameters (sent when they differ from the last
    /// ones a viewer was sent), as a complete WebSocket text frame.
    pub header: Bytes,
    /// What precedes the payload in the binary frame message.
    pub prefix: Bytes,
}

impl WsFormat {
    /// The packaging of stream `key` (its header events name it).
    pub fn new(key: StreamKey) -> Self {
        Self { key, header: None }
    }
}

impl FrameFormat for WsFormat {
    type Out = WsFrame;

    fn package(&mut self, e: &LogEntry) -> WsFrame {
        let header = match &self.header {
            Some((h, event)) if Arc::ptr_eq(h, &e.header) => event.clone(),
            _ => {
                let event = header_frame(&self.key.node, &self.key.stream, &e.header);
                self.header = Some((e.header.clone(), event.clone()));
                event
            }
        };
        WsFrame { header, prefix: encode_frame_prefix(e) }
    }
}
