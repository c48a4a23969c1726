//! The built-in test-pattern camera: a moving picture with its label, frame counter and clock,
//! H.264-encoded in-process by OpenH264 (built from source, no system library), paced at the
//! configured frame rate on its own thread. Every frame carries its counter and capture time
//! twice: in a test-pattern SEI message ([`mediamesh_media::h264::sei`]) for viewers that read
//! the bitstream, and burned into the picture as a block code ([`blockcode`]) for viewers that
//! only see the decoded picture (a browser measuring glass-to-glass latency).

pub mod blockcode;
mod font;
mod picture;

pub use picture::Picture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediamesh_media::h264::parameter_sets;
use mediamesh_media::h264::sei::{TestPatternStamp, restamp};
use mediamesh_media::{Frame, FrameFlags, StreamHeader, TrackInfo, VIDEO_CLOCK_RATE};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode, UsageType,
};
use tokio_util::sync::CancellationToken;

use super::{FrameSink, SourceError, unix_micros};
use crate::config::TestPatternConfig;
use crate::stats::EdgeStats;

/// An H.264 encoder of test-pattern pictures.
pub struct TestPatternEncoder {
    encoder: Encoder,
    picture: Picture,
    label: String,
    fps: u32,
    annexb: Vec<u8>,
}

/// One encoded picture.
#[derive(Debug, Clone)]
pub struct EncodedPicture {
    /// Annex-B access unit (SPS/PPS on keyframes, the SEI stamp, the slices).
    pub data: Bytes,
    /// Whether it is an IDR picture.
    pub keyframe: bool,
    /// The SPS and PPS, on keyframes.
    pub parameter_sets: Option<(Bytes, Bytes)>,
}

impl TestPatternEncoder {
    /// An encoder for the configuration; `label` is drawn on the picture.
    pub fn new(cfg: &TestPatternConfig, label: &str) -> Result<Self, SourceError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(cfg.bitrate_kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(cfg.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .intra_frame_period(IntraFramePeriod::from_num_frames(cfg.gop))
            .usage_type(UsageType::CameraVideoRealTime)
            .skip_frames(false)
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| SourceError::Encoder(e.to_string()))?;
        Ok(Self {
            encoder,
            picture: Picture::new(cfg.width as usize, cfg.height as usize),
            label: cfg.label.clone().unwrap_or_else(|| label.to_owned()),
            fps: cfg.fps,
            annexb: Vec::new(),
        })
    }

    /// Draws and encodes picture `counter`, captured at `capture_us`.
    pub fn encode(
        &mut self,
        counter: u64,
        capture_us: u64,
        force_keyframe: bool,
    ) -> Result<EncodedPicture, SourceError> {
        self.picture.draw(&self.label, counter, capture_us);
        if force_keyframe {
            self.encoder.force_intra_frame();
        }
        let bs = self.encoder.encode(&self.picture).map_err(|e| SourceError::Encoder(e.to_string()))?;
        let keyframe = bs.frame_type() == FrameType::IDR;
        self.annexb.clear();
        bs.write_vec(&mut self.annexb);

        // Re-emit with the SEI stamp just before the first slice.
        let mut out = Vec::with_capacity(self.annexb.len() + 64);
        restamp(&self.annexb, TestPatternStamp { counter, capture_us }, &mut out);
        let (sps, pps) = parameter_sets(&self.annexb);
        let (sps, pps) = (sps.map(Bytes::copy_from_slice), pps.map(Bytes::copy_from_slice));
        Ok(EncodedPicture { data: out.into(), keyframe, parameter_sets: sps.zip(pps) })
    }

    /// The presentation timestamp of picture `counter` (90 kHz).
    pub fn pts(&self, counter: u64) -> i64 {
        (counter * u64::from(VIDEO_CLOCK_RATE) / u64::from(self.fps.max(1))) as i64
    }
}

pub(super) fn spawn(
    name: &str,
    cfg: &TestPatternConfig,
    mut sink: FrameSink,
    cancel: CancellationToken,
    stats: Arc<EdgeStats>,
) -> Result<tokio::task::JoinHandle<()>, SourceError> {
    let mut enc = TestPatternEncoder::new(cfg, name)?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(cfg.fps));
    let stream = name.to_owned();
    EdgeStats::inc(&stats.sources_started);
    tracing::info!(%stream, width = cfg.width, height = cfg.height, fps = cfg.fps, kbps = cfg.bitrate_kbps, "test pattern started");
    sink.makes_keyframes_on_request();
    // Encoding is CPU work: it runs on a blocking thread, paced by the wall clock.
    let handle = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut counter: u64 = 0;
        while !cancel.is_cancelled() && !sink.is_closed() {
            let due = start + interval.mul_f64(counter as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
            let capture_us = unix_micros();
            let force = sink.take_keyframe_request() || counter == 0;
            let pic = match enc.encode(counter, capture_us, force) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(%stream, error = %e, "test pattern encoding failed");
                    sink.fail(e.to_string());
                    break;
                }
            };
            if let Some((sps, pps)) = pic.parameter_sets {
                sink.set_header(StreamHeader { tracks: vec![TrackInfo::h264(0, sps, pps)] });
            }
            let pts = enc.pts(counter);
            let frame = Frame {
                track: 0,
                flags: FrameFlags::keyframe(pic.keyframe),
                seq: counter,
                pts,
                dts: pts,
                capture_us,
                payload: pic.data,
            };
            if sink.push(frame).is_err() {
                break;
            }
            counter += 1;
            // Late by more than two frames (CPU starved): skip the missed slots rather than burst.
            let behind = Instant::now().saturating_duration_since(start + interval.mul_f64(counter as f64));
            if behind > 2 * interval {
                counter += (behind.as_secs_f64() / interval.as_secs_f64()) as u64;
            }
        }
        EdgeStats::inc(&stats.sources_stopped);
        tracing::info!(%stream, frames = counter, "test pattern stopped");
    });
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use mediamesh_media::h264::{is_keyframe, parse_sps, sei::read_stamp};

    use super::*;

    #[test]
    fn encodes_decodable_stamped_pictures() {
        let cfg = TestPatternConfig { width: 320, height: 240, fps: 25, bitrate_kbps: 300, gop: 10, label: None };
        let mut enc = TestPatternEncoder::new(&cfg, "cam1").unwrap();
        for n in 0..12u64 {
            let pic = enc.encode(n, 1_000 + n, false).unwrap();
            assert_eq!(read_stamp(&pic.data), Some(TestPatternStamp { counter: n, capture_us: 1_000 + n }));
            assert_eq!(pic.keyframe, is_keyframe(&pic.data), "frame {n}");
            assert_eq!(pic.keyframe, n % 10 == 0, "GOP of 10, frame {n}");
            if let Some((sps, _)) = &pic.parameter_sets {
                let p = parse_sps(sps).unwrap();
                assert_eq!((p.width, p.height), (320, 240));
            }
        }
        let forced = enc.encode(12, 0, true).unwrap();
        assert!(forced.keyframe, "a requested keyframe comes at once");
        assert_eq!(enc.pts(25), 90_000);
    }

    /// The burned-in stamp survives the encoder at the demo's and the tests' bitrates: every
    /// decoded picture reads back its own capture time and counter.
    #[test]
    fn the_block_code_survives_compression() {
        use openh264::decoder::Decoder;
        use openh264::formats::YUVSource;

        for (width, height, kbps) in [(320, 240, 300), (1280, 720, 2000), (640, 360, 600)] {
            let cfg = TestPatternConfig { width, height, fps: 25, bitrate_kbps: kbps, gop: 25, label: None };
            let mut enc = TestPatternEncoder::new(&cfg, "cam1").unwrap();
            let mut dec = Decoder::new().unwrap();
            let start_us = 1_764_000_000_000_000u64;
            for n in 0..40u64 {
                let capture_us = start_us + n * 40_000 + 123;
                let pic = enc.encode(n, capture_us, false).unwrap();
                let yuv = dec.decode(&pic.data).unwrap().expect("a picture per access unit");
                let (w, h) = yuv.dimensions();
                let read = blockcode::read(yuv.y(), yuv.strides().0, w, h);
                assert_eq!(read, Some((capture_us / 1000, n as u16)), "{width}x{height} at {kbps} kbit/s, frame {n}");
            }
        }
    }
}
