//! Sources: where a stream's frames come from, started on AddVideo and stopped on RemoveVideo.
//!
//! A source pushes frames and codec-parameter changes into a [`FrameSink`], a bounded queue to
//! its uplink, which drains it at once into its [`crate::outbox::Outbox`] (where the dropping
//! policies live). A header travels in the same queue as the frames, so it can never overtake
//! older frames; it is never dropped (if the queue is full it waits and goes out just before the
//! next accepted frame). Should the uplink fall behind anyway, the overflow policy is
//! codec-aware: the frame is dropped, and every following frame until a keyframe, which the
//! sink asks the source to produce early. Sources that can make a keyframe on request (the test
//! pattern) say so, and the uplink asks for one when a new data tunnel opens.

mod ffmpeg;
mod file;
pub(crate) mod rtsp;
mod testpattern;

pub use file::Clip;

/// The test-pattern encoder, usable on its own (the bench encodes its clip with it), and its
/// burned-in capture stamp.
pub mod testpattern_encoder {
    pub use super::testpattern::{EncodedPicture, Picture, TestPatternEncoder, blockcode};
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mediamesh_media::{Frame, StreamHeader};
use mediamesh_tunnel::wire::DropReason;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, StreamConfig};
use crate::stats::{EdgeStats, StreamStats};

/// What a source produces, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// New codec parameters for the frames that follow.
    Header(StreamHeader),
    /// A frame.
    Frame(Frame),
}

/// The receiving side of a source.
#[derive(Debug)]
pub struct SourceOutput {
    /// Headers and frames, in order.
    pub items: mpsc::Receiver<SourceItem>,
    failure: Arc<Mutex<Option<String>>>,
    want_keyframe: Arc<AtomicBool>,
    makes_keyframes: Arc<AtomicBool>,
}

impl SourceOutput {
    /// Asks the source for a keyframe; true if it makes them on request.
    pub fn request_keyframe(&self) -> bool {
        self.want_keyframe.store(true, Ordering::Relaxed);
        self.makes_keyframes.load(Ordering::Relaxed)
    }

    /// Why the source stopped on its own, once `frames` has closed.
    pub fn failure(&self) -> String {
        let reason = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        reason.unwrap_or_else(|| "the source stopped".into())
    }
}

/// The sending side, given to a source.
#[derive(Debug)]
pub struct FrameSink {
    tx: mpsc::Sender<SourceItem>,
    /// The last header the source announced.
    header: Option<StreamHeader>,
    /// A header not yet queued (the queue was full).
    pending_header: Option<StreamHeader>,
    dropping: bool,
    want_keyframe: Arc<AtomicBool>,
    makes_keyframes: Arc<AtomicBool>,
    stats: Arc<EdgeStats>,
    stream_stats: Arc<StreamStats>,
    failure: Arc<Mutex<Option<String>>>,
}

/// The data tunnel is gone; the source should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

impl FrameSink {
    /// Announces codec parameters for the frames that follow (no-op if unchanged).
    pub fn set_header(&mut self, header: StreamHeader) {
        if self.header.as_ref() != Some(&header) {
            self.header = Some(header.clone());
            self.pending_header = Some(header);
        }
    }

    /// Offers a frame. Never waits: when the queue is full the frame is dropped and so is
    /// every frame up to the next keyframe.
    pub fn push(&mut self, mut frame: Frame) -> Result<(), SinkClosed> {
        if self.dropping {
            let sync =
                self.header.as_ref().map_or(frame.is_keyframe(), |h| h.is_sync_point(frame.track, frame.is_keyframe()));
            if !sync {
                self.stats.add_drop(DropReason::AwaitingKeyframe, 1);
                self.stream_stats.add_drop(DropReason::AwaitingKeyframe, 1);
                return Ok(());
            }
            frame.flags = frame.flags.with_discontinuity();
        }
        if let Some(h) = self.pending_header.take() {
            match self.tx.try_send(SourceItem::Header(h)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(SourceItem::Header(h))) => {
                    self.pending_header = Some(h);
                    self.overflow();
                    return Ok(());
                }
                Err(_) => return Err(SinkClosed),
            }
        }
        match self.tx.try_send(SourceItem::Frame(frame)) {
            Ok(()) => {
                self.dropping = false;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SinkClosed),
        }
    }

    fn overflow(&mut self) {
        self.stats.add_drop(DropReason::QueueFull, 1);
        self.stream_stats.add_drop(DropReason::QueueFull, 1);
        if !self.dropping {
            tracing::debug!("uplink queue full: dropping until the next keyframe");
        }
        self.dropping = true;
        self.want_keyframe.store(true, Ordering::Relaxed);
    }

    /// Declares that this source makes a keyframe when asked ([`FrameSink::take_keyframe_request`]).
    pub fn makes_keyframes_on_request(&self) {
        self.makes_keyframes.store(true, Ordering::Relaxed);
    }

    /// Whether a keyframe was asked for since the last call (sources that can, make one).
    pub fn take_keyframe_request(&self) -> bool {
        self.want_keyframe.swap(false, Ordering::Relaxed)
    }

    /// Records why the source is giving up; the uplink reports it to the hub.
    pub fn fail(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
    }

    /// Whether the receiving side is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A bounded source → tunnel queue of `capacity` items (frames and headers), counting its drops
/// in the edge's and the stream's counters.
pub fn channel(capacity: usize, stats: Arc<EdgeStats>, stream_stats: Arc<StreamStats>) -> (FrameSink, SourceOutput) {
    let (tx, items) = mpsc::channel(capacity);
    let failure = Arc::new(Mutex::new(None));
    let want_keyframe: Arc<AtomicBool> = Arc::default();
    let makes_keyframes: Arc<AtomicBool> = Arc::default();
    let sink = FrameSink {
        tx,
        header: None,
        pending_header: None,
        dropping: false,
        want_keyframe: want_keyframe.clone(),
        makes_keyframes: makes_keyframes.clone(),
        stats,
        stream_stats,
        failure: failure.clone(),
    };
    (sink, SourceOutput { items, failure, want_keyframe, makes_keyframes })
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The encoder could not be created.
    #[error("test pattern encoder: {0}")]
    Encoder(String),
}

/// A running source; [`SourceHandle::stop`] ends it and waits until it is gone.
#[derive(Debug)]
pub struct SourceHandle {
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl SourceHandle {
    /// Stops the source and waits for it (the ffmpeg process killed and reaped, the encoder
    /// thread finished).
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.done.await;
    }
}

/// Starts the source of a stream.
pub fn start(
    name: &str,
    cfg: &StreamConfig,
    sink: FrameSink,
    stats: Arc<EdgeStats>,
) -> Result<SourceHandle, SourceError> {
    let cancel = CancellationToken::new();
    let done = match &cfg.source {
        SourceConfig::TestPattern(tp) => testpattern::spawn(name, tp, sink, cancel.clone(), stats)?,
        SourceConfig::Ffmpeg(ff) => ffmpeg::spawn(name, ff, sink, cancel.clone(), stats),
        SourceConfig::Rtsp(r) => rtsp::spawn(name, r, sink, cancel.clone(), stats),
        SourceConfig::File(f) => file::spawn(name, f, sink, cancel.clone(), stats),
    };
    Ok(SourceHandle { cancel, done })
}

/// Microseconds since the Unix epoch.
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mediamesh_media::FrameFlags;

    use super::*;

    fn frame(seq: u64, key: bool) -> Frame {
        Frame { track: 0, flags: FrameFlags::keyframe(key), seq, pts: 0, dts: 0, capture_us: 0, payload: Bytes::new() }
    }

    fn frames(out: &mut SourceOutput) -> Vec<(u64, bool, bool)> {
        std::iter::from_fn(|| out.items.try_recv().ok())
            .filter_map(|i| match i {
                SourceItem::Frame(f) => Some((f.seq, f.is_keyframe(), f.flags.is_discontinuity())),
                SourceItem::Header(_) => None,
            })
            .collect()
    }

    #[test]
    fn full_queue_drops_until_keyframe_and_asks_for_one() {
        let stats = Arc::new(EdgeStats::default());
        let (mut sink, mut out) = channel(2, stats.clone(), Arc::default());
        for (seq, key) in [(0, true), (1, false), (2, false), (3, false), (4, true), (5, false)] {
            sink.push(frame(seq, key)).unwrap();
            if seq == 2 {
                assert!(sink.take_keyframe_request(), "a drop asks for a keyframe");
                // Make room: the tunnel drained the queue.
                out.items.try_recv().unwrap();
                out.items.try_recv().unwrap();
            }
        }
        let got = frames(&mut out);
        assert_eq!(got, vec![(4, true, true), (5, false, false)], "3 dropped while waiting, 4 resumes");
        assert_eq!(stats.drops(DropReason::QueueFull), 1);
        assert_eq!(stats.drops(DropReason::AwaitingKeyframe), 1);
    }

    #[test]
    fn a_header_never_overtakes_older_frames_and_is_never_lost() {
        let (mut sink, mut out) = channel(3, Arc::default(), Arc::default());
        let header = |n: u8| StreamHeader {
            tracks: vec![mediamesh_media::TrackInfo::h264(0, Bytes::from(vec![0x67, n]), Bytes::from_static(b"\x68"))],
        };
        sink.set_header(header(1));
        sink.push(frame(0, true)).unwrap();
        sink.push(frame(1, false)).unwrap();
        // The parameters change while the queue is full: the header waits, the frame drops.
        sink.set_header(header(2));
        sink.push(frame(2, true)).unwrap();
        let first: Vec<SourceItem> = std::iter::from_fn(|| out.items.try_recv().ok()).collect();
        assert_eq!(
            first,
            vec![SourceItem::Header(header(1)), SourceItem::Frame(frame(0, true)), SourceItem::Frame(frame(1, false))]
        );
        sink.push(frame(3, true)).unwrap();
        let next: Vec<SourceItem> = std::iter::from_fn(|| out.items.try_recv().ok()).collect();
        assert!(matches!(&next[..], [SourceItem::Header(h), SourceItem::Frame(f)] if *h == header(2) && f.seq == 3));
    }

    #[test]
    fn passwords_never_reach_logs() {
        let cfg = crate::config::RtspConfig::new("rtsp://u:p%40ss@cam/x");
        assert!(!format!("{cfg:?}").contains("p%40ss"));
        let (url, creds) = rtsp::parse_url(&cfg).unwrap();
        assert_eq!(url.as_str(), "rtsp://cam/x");
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("u", "p@ss"));
    }

    #[test]
    fn closed_receiver_is_reported() {
        let (mut sink, out) = channel(2, Arc::default(), Arc::default());
        drop(out);
        assert_eq!(sink.push(frame(0, true)), Err(SinkClosed));
    }
}
