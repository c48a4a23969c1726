//! Sources: where a stream's frames come from, started on AddVideo and stopped on RemoveVideo.
//!
//! A source pushes frames into a [`FrameSink`] (a bounded queue to the data tunnel) and
//! publishes its codec parameters on a `watch` channel (latest value wins; never queued). The
//! sink's overflow policy is codec-aware: when the queue is full the frame is dropped, and every
//! following frame is dropped until a keyframe, which the sink asks the source to produce early.

mod ffmpeg;
mod testpattern;

/// The test-pattern encoder, usable on its own (the bench encodes its clip with it).
pub mod testpattern_encoder {
    pub use super::testpattern::{EncodedPicture, Picture, TestPatternEncoder};
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mediamesh_media::{Frame, StreamHeader};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::StreamConfig;
use crate::stats::EdgeStats;

/// The receiving side of a source: frames and the header in effect.
#[derive(Debug)]
pub struct SourceOutput {
    /// Frames, in order.
    pub frames: mpsc::Receiver<Frame>,
    /// The stream header; `None` until the source knows its parameters.
    pub header: watch::Receiver<Option<StreamHeader>>,
    failure: Arc<Mutex<Option<String>>>,
}

impl SourceOutput {
    /// Why the source stopped on its own, once `frames` has closed.
    pub fn failure(&self) -> String {
        let reason = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        reason.unwrap_or_else(|| "the source stopped".into())
    }
}

/// The sending side, given to a source.
#[derive(Debug)]
pub struct FrameSink {
    tx: mpsc::Sender<Frame>,
    header: watch::Sender<Option<StreamHeader>>,
    dropping: bool,
    want_keyframe: Arc<AtomicBool>,
    stats: Arc<EdgeStats>,
    failure: Arc<Mutex<Option<String>>>,
}

/// The data tunnel is gone; the source should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

impl FrameSink {
    /// Publishes new codec parameters (no-op if unchanged).
    pub fn set_header(&self, header: StreamHeader) {
        self.header.send_if_modified(|h| {
            if h.as_ref() == Some(&header) {
                return false;
            }
            *h = Some(header);
            true
        });
    }

    /// Offers a frame. Never waits: when the queue is full the frame is dropped and so is
    /// every frame up to the next keyframe.
    pub fn push(&mut self, mut frame: Frame) -> Result<(), SinkClosed> {
        if self.dropping {
            if !frame.is_keyframe() {
                EdgeStats::inc(&self.stats.dropped_awaiting_keyframe);
                return Ok(());
            }
            frame.flags = frame.flags.with_discontinuity();
        }
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.dropping = false;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                EdgeStats::inc(&self.stats.dropped_queue_full);
                if !self.dropping {
                    tracing::debug!("uplink queue full: dropping until the next keyframe");
                }
                self.dropping = true;
                self.want_keyframe.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SinkClosed),
        }
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

/// A bounded source → tunnel queue of `capacity` frames.
pub fn channel(capacity: usize, stats: Arc<EdgeStats>) -> (FrameSink, SourceOutput) {
    let (tx, frames) = mpsc::channel(capacity);
    let (header_tx, header) = watch::channel(None);
    let failure = Arc::new(Mutex::new(None));
    let sink = FrameSink {
        tx,
        header: header_tx,
        dropping: false,
        want_keyframe: Arc::default(),
        stats,
        failure: failure.clone(),
    };
    (sink, SourceOutput { frames, header, failure })
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The encoder could not be created.
    #[error("test pattern encoder: {0}")]
    Encoder(String),
    /// The stream configuration has no usable source.
    #[error("stream {0:?} has no source configured")]
    NoSource(String),
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
    let done = if let Some(tp) = &cfg.test_pattern {
        testpattern::spawn(name, tp, sink, cancel.clone(), stats)?
    } else if let Some(ff) = &cfg.ffmpeg {
        ffmpeg::spawn(name, ff, sink, cancel.clone(), stats)
    } else {
        return Err(SourceError::NoSource(name.into()));
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

    #[test]
    fn full_queue_drops_until_keyframe_and_asks_for_one() {
        let stats = Arc::new(EdgeStats::default());
        let (mut sink, mut out) = channel(2, stats.clone());
        for (seq, key) in [(0, true), (1, false), (2, false), (3, false), (4, true), (5, false)] {
            sink.push(frame(seq, key)).unwrap();
            if seq == 2 {
                assert!(sink.take_keyframe_request(), "a drop asks for a keyframe");
                // Make room: the tunnel drained the queue.
                out.frames.try_recv().unwrap();
                out.frames.try_recv().unwrap();
            }
        }
        let got: Vec<(u64, bool, bool)> = std::iter::from_fn(|| out.frames.try_recv().ok())
            .map(|f| (f.seq, f.is_keyframe(), f.flags.is_discontinuity()))
            .collect();
        assert_eq!(got, vec![(4, true, true), (5, false, false)], "3 dropped while waiting, 4 resumes");
        assert_eq!(EdgeStats::get(&stats.dropped_queue_full), 1);
        assert_eq!(EdgeStats::get(&stats.dropped_awaiting_keyframe), 1);
    }

    #[test]
    fn closed_receiver_is_reported() {
        let (mut sink, out) = channel(2, Arc::default());
        drop(out);
        assert_eq!(sink.push(frame(0, true)), Err(SinkClosed));
    }
}
