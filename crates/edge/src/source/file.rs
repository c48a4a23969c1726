//! A recorded H.264 clip played in a loop: a camera that costs no encoding.
//!
//! The clip (raw Annex-B) is read whole and split into access units when the stream starts.
//! Frames go out paced by the wall clock at the configured rate, with timestamps that keep
//! increasing across loops, and payloads shared with the loaded clip (no copy) unless every
//! frame is stamped with the test-pattern SEI (`stamp: true`), which is how the bench measures
//! latency and gaps at the viewers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mediamesh_media::annexb::{AccessUnit, AccessUnitSplitter, VideoCodec};
use mediamesh_media::h264::sei::{TestPatternStamp, restamp};
use mediamesh_media::reorder::{Known, Reorder, Times};
use mediamesh_media::{Codec, Frame, FrameFlags, StreamHeader, TrackInfo, VIDEO_CLOCK_RATE};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{FrameSink, unix_micros};
use crate::config::FileConfig;
use crate::stats::EdgeStats;

/// Largest clip read.
const MAX_CLIP_BYTES: u64 = 256 * 1024 * 1024;
/// Largest access unit in a clip.
const MAX_ACCESS_UNIT: usize = 16 * 1024 * 1024;

/// A clip split into access units, from its first keyframe that carries SPS and PPS.
#[derive(Debug)]
pub struct Clip {
    /// The codec parameters.
    pub header: StreamHeader,
    /// The access units, the first one a keyframe.
    pub frames: Vec<AccessUnit>,
}

impl Clip {
    /// Splits raw H.264 (Annex-B) into a playable clip.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let mut splitter = AccessUnitSplitter::new(VideoCodec::H264, MAX_ACCESS_UNIT);
        let mut aus = Vec::new();
        splitter.push(data, &mut aus).map_err(|e| e.to_string())?;
        splitter.flush(&mut aus).map_err(|e| e.to_string())?;
        let (start, sps, pps) = aus
            .iter()
            .enumerate()
            .find_map(|(i, au)| match (au.keyframe, &au.sps, &au.pps) {
                (true, Some(sps), Some(pps)) => Some((i, sps.clone(), pps.clone())),
                _ => None,
            })
            .ok_or("no keyframe with SPS and PPS: is it raw H.264 (ffmpeg -f h264)?")?;
        let header = StreamHeader { tracks: vec![TrackInfo::h264(0, sps, pps)] };
        header.validate().map_err(|e| format!("unusable parameter sets: {e}"))?;
        Ok(Self { header, frames: aus.split_off(start) })
    }
}

pub(super) fn spawn(
    name: &str,
    cfg: &FileConfig,
    mut sink: FrameSink,
    cancel: CancellationToken,
    stats: Arc<EdgeStats>,
) -> tokio::task::JoinHandle<()> {
    let stream = name.to_owned();
    let cfg = cfg.clone();
    tokio::spawn(async move {
        let clip = match load(&cfg).await {
            Ok(c) => c,
            Err(reason) => {
                warn!(%stream, %reason, "clip source failed");
                sink.fail(reason);
                return;
            }
        };
        EdgeStats::inc(&stats.sources_started);
        info!(%stream, path = %cfg.path.display(), frames = clip.frames.len(), fps = cfg.fps, "clip started");
        let sent = play(&clip, &cfg, &mut sink, &cancel).await;
        EdgeStats::inc(&stats.sources_stopped);
        info!(%stream, frames = sent, "clip stopped");
    })
}

async fn load(cfg: &FileConfig) -> Result<Clip, String> {
    let path = cfg.path.display();
    let meta = tokio::fs::metadata(&cfg.path).await.map_err(|e| format!("cannot read clip {path}: {e}"))?;
    if meta.len() > MAX_CLIP_BYTES {
        return Err(format!("clip {path} is {} bytes; the limit is {MAX_CLIP_BYTES}", meta.len()));
    }
    let data = tokio::fs::read(&cfg.path).await.map_err(|e| format!("cannot read clip {path}: {e}"))?;
    Clip::parse(&data).map_err(|e| format!("clip {path}: {e}"))
}

/// Sends the clip's frames in a loop until cancelled; returns how many went out.
async fn play(clip: &Clip, cfg: &FileConfig, sink: &mut FrameSink, cancel: &CancellationToken) -> u64 {
    sink.set_header(clip.header.clone());
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.fps.max(1)));
    let mut ticks = tokio::time::interval_at(Instant::now(), period);
    // A starved task skips the frames it missed rather than bursting them.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut seq: u64 = 0;
    let codec = clip.header.video().map_or(Codec::H264, |t| t.codec);
    let mut reorder = Reorder::new(codec, VIDEO_CLOCK_RATE);
    loop {
        tokio::select! {
            at = ticks.tick() => {
                // The frame slot this tick stands for (skipped slots leave a gap in `seq`).
                seq = seq.max((at - start).as_micros() as u64 / period.as_micros().max(1) as u64);
            }
            () = cancel.cancelled() => return seq,
        }
        let au = &clip.frames[(seq % clip.frames.len() as u64) as usize];
        let capture_us = unix_micros();
        let payload = if cfg.stamp {
            let mut stamped = Vec::with_capacity(au.data.len() + 64);
            restamp(&au.data, TestPatternStamp { counter: seq, capture_us }, &mut stamped);
            Bytes::from(stamped)
        } else {
            au.data.clone()
        };
        // The clip is in decode order: its slots are decode times (see `reorder`).
        let slot = (seq * u64::from(VIDEO_CLOCK_RATE) / u64::from(cfg.fps.max(1))) as i64;
        let Times { pts, dts } = reorder.times(&au.data, Known::Dts(slot));
        let frame = Frame { track: 0, flags: FrameFlags::keyframe(au.keyframe), seq, pts, dts, capture_us, payload };
        if sink.push(frame).is_err() {
            return seq;
        }
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use mediamesh_media::h264::sei::read_stamp;

    use super::*;
    use crate::config::TestPatternConfig;
    use crate::source::testpattern_encoder::TestPatternEncoder;

    fn clip_bytes(frames: u64) -> Vec<u8> {
        let cfg = TestPatternConfig { width: 160, height: 96, fps: 25, bitrate_kbps: 200, gop: 5, label: None };
        let mut enc = TestPatternEncoder::new(&cfg, "clip").unwrap();
        (0..frames).flat_map(|n| enc.encode(n, n, false).unwrap().data.to_vec()).collect()
    }

    #[test]
    fn a_clip_starts_at_its_first_complete_keyframe() {
        let data = clip_bytes(12);
        let clip = Clip::parse(&data).unwrap();
        assert_eq!(clip.frames.len(), 12);
        assert!(clip.frames[0].keyframe);
        // Cut into the first GOP: playback starts at the next keyframe.
        let second_gop = data.windows(4).enumerate().filter(|(_, w)| *w == [0, 0, 0, 1]).nth(8).unwrap().0;
        let clip = Clip::parse(&data[second_gop..]).unwrap();
        assert!(clip.frames[0].keyframe && clip.frames.len() < 12, "{} frames", clip.frames.len());
        assert!(Clip::parse(b"\x00\x00\x00\x01\x41\x9a").unwrap_err().contains("no keyframe"));
    }

    #[tokio::test]
    async fn playback_loops_with_rising_timestamps_and_fresh_stamps() {
        let clip = Clip::parse(&clip_bytes(5)).unwrap();
        let cfg = FileConfig { path: "clip.h264".into(), fps: 25, stamp: true };
        let (mut sink, mut out) = super::super::channel(64, Arc::default(), Arc::default());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let player = tokio::spawn(async move { play(&clip, &cfg, &mut sink, &cancel).await });
        tokio::time::sleep(Duration::from_millis(40 * 12 + 20)).await;
        stop.cancel();
        let sent = player.await.unwrap();
        let mut frames = Vec::new();
        while let Ok(item) = out.items.try_recv() {
            if let super::super::SourceItem::Frame(f) = item {
                frames.push(f);
            }
        }
        assert!(frames.len() as u64 <= sent, "{} frames, {sent} slots", frames.len());
        assert!(frames.len() >= 8, "{} frames", frames.len());
        assert!(frames.windows(2).all(|w| w[1].seq > w[0].seq), "slots only go forward");
        for f in &frames {
            let slot = f.seq;
            assert_eq!(f.pts, slot as i64 * 3_600);
            assert_eq!(f.is_keyframe(), slot % 5 == 0, "the clip's GOP repeats, slot {slot}");
            assert_eq!(read_stamp(&f.payload).map(|s| s.counter), Some(slot), "restamped");
        }
    }
}
