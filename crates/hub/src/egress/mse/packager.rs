//! The MSE packager: a stream's fMP4 init segment and one fragment per frame, built once for
//! every MSE viewer, each already framed as a WebSocket message.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mediamesh_media::fmp4::{Fmp4Error, Muxer};
use serde::Serialize;

use crate::egress::ws::wire::{OP_BINARY, OP_TEXT, frame, frame_header};
use crate::session::StreamKey;
use crate::session::log::{FrameFormat, HeaderEntry, LogEntry, PerFrame};

/// The MSE packaging of one stream.
#[derive(Debug)]
pub struct MseFormat {
    key: StreamKey,
    /// The muxer, kept across header changes so the timeline continues.
    muxer: Option<Muxer>,
    /// The header the muxer was last set up for, and what a viewer is sent for it.
    header: Option<(Arc<HeaderEntry>, Bytes)>,
}

/// The attached MSE packager of a stream.
pub type MsePackager = PerFrame<MseFormat>;

/// A frame as MSE viewers are sent it.
#[derive(Debug)]
pub struct MseFrame {
    /// What a viewer is sent before this frame when its last init was for other codec
    /// parameters: the `init` event and the init segment (two complete WebSocket messages), or
    /// an `error` event when the stream cannot be packaged.
    pub init: Bytes,
    /// The fragment (`moof` + `mdat`) as a binary WebSocket message; `None` for a frame of a
    /// track the init segment leaves out, or when the stream cannot be packaged.
    pub fragment: Option<Fragment>,
}

/// A fragment and the WebSocket frame header before it (kept apart so the fragment is not
/// copied; a viewer writes both with one vectored write).
#[derive(Debug)]
pub struct Fragment {
    head: [u8; 10],
    head_len: u8,
    /// The fragment.
    pub data: Bytes,
}

impl Fragment {
    fn new(data: Bytes) -> Self {
        let (head, n) = frame_header(OP_BINARY, data.len());
        Self { head, head_len: n as u8, data }
    }

    /// The WebSocket frame header.
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }
}

/// The `init` event: what a player needs to create its `SourceBuffer`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InitEvent<'a> {
    r#type: &'static str,
    node: &'a str,
    stream: &'a str,
    /// `video/mp4; codecs="…"`, for `MediaSource.isTypeSupported` and `addSourceBuffer`.
    mime: &'a str,
    /// Picture size of the first video track.
    width: Option<u32>,
    height: Option<u32>,
}

/// The `error` event: the stream cannot be played over MSE.
#[derive(Debug, Serialize)]
struct ErrorEvent<'a> {
    r#type: &'static str,
    message: &'a str,
}

impl MseFormat {
    /// The packaging of stream `key` (its init events name it).
    pub fn new(key: StreamKey) -> Self {
        Self { key, muxer: None, header: None }
    }

    fn init_messages(&mut self, h: &HeaderEntry) -> Result<Bytes, Fmp4Error> {
        let muxer = match &mut self.muxer {
            Some(m) => {
                m.set_header(&h.header)?;
                m
            }
            None => self.muxer.insert(Muxer::new(&h.header)?),
        };
        let video = h.video.as_ref();
        let event = InitEvent {
            r#type: "init",
            node: &self.key.node,
            stream: &self.key.stream,
            mime: muxer.mime_type(),
            width: video.map(|v| v.width),
            height: video.map(|v| v.height),
        };
        let json = serde_json::to_vec(&event).unwrap_or_default();
        let init = muxer.init_segment();
        let mut out = BytesMut::with_capacity(json.len() + init.len() + 20);
        out.extend_from_slice(&frame(OP_TEXT, &json));
        let (head, n) = frame_header(OP_BINARY, init.len());
        out.extend_from_slice(&head[..n]);
        out.extend_from_slice(init);
        Ok(out.freeze())
    }
}

impl FrameFormat for MseFormat {
    type Out = MseFrame;

    fn package(&mut self, e: &LogEntry) -> MseFrame {
        let init = match &self.header {
            Some((h, init)) if Arc::ptr_eq(h, &e.header) => init.clone(),
            _ => {
                let init = match self.init_messages(&e.header) {
                    Ok(init) => init,
                    Err(err) => {
                        self.muxer = None;
                        let message = format!("this stream cannot be played over MSE: {err}");
                        let event = ErrorEvent { r#type: "error", message: &message };
                        frame(OP_TEXT, &serde_json::to_vec(&event).unwrap_or_default())
                    }
                };
                self.header = Some((e.header.clone(), init.clone()));
                init
            }
        };
        let fragment = self.muxer.as_mut().and_then(|m| m.frame_fragment(&e.frame)).and_then(|f| match f {
            Ok(f) => Some(Fragment::new(f)),
            Err(err) => {
                tracing::debug!(stream = %self.key, error = %err, "a frame could not be packaged as fMP4");
                None
            }
        });
        MseFrame { init, fragment }
    }
}
