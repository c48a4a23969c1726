//! A stream produced by an ffmpeg process: `ffmpeg <input> <encode> -an -f h264|hevc pipe:1`.
//!
//! Its stdout (raw H.264 or H.265, Annex-B) is split into access units; keyframes and parameter
//! sets are detected from the NAL units. Its stderr goes to our log, with every password masked
//! ([`crate::redact`]: ffmpeg echoes its input URL in errors). A process that exits before its
//! first frame fails the start at once, with its last message as the reason (the camera refused,
//! the input does not exist); the edge then spaces out further starts ([`crate::starts`]). Once
//! it has streamed, a process that exits is restarted with capped exponential backoff, logged
//! once per change of reason. When the stream is stopped the process is killed and reaped
//! (`kill_on_drop` covers a panicking task too).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mediamesh_media::annexb::{AccessUnit, AccessUnitSplitter, VideoCodec};
use mediamesh_media::reorder::{Known, Reorder, Times};
use mediamesh_media::{Codec, Frame, FrameFlags, StreamHeader, TrackInfo, VIDEO_CLOCK_RATE};
use mediamesh_tunnel::backoff::{Backoff, BackoffConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{FrameSink, unix_micros};
use crate::config::{FfmpegConfig, VideoCodecName};
use crate::redact::Secrets;
use crate::stats::EdgeStats;

/// Largest access unit accepted from ffmpeg.
const MAX_ACCESS_UNIT: usize = 16 * 1024 * 1024;
/// A process that ran this long resets the restart backoff.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// Timestamps for a stream that carries none (raw H.264/H.265 on a pipe): the arrival time,
/// except that access units arriving close together (one `read`, or a burst after the CPU was
/// busy) are spread by the stream's frame interval, so timestamps strictly increase by about one
/// frame; they never run more than 200 ms ahead of arrival.
///
/// The interval is the mean over the last [`Pacer::WINDOW`] arrivals, not a smoothed per-frame
/// sample: a stall followed by a burst of frames leaves it near the true interval, where a
/// per-frame average would shrink it until two timestamps fall within one frame of each other
/// (which players rounding to the frame rate reject as non-increasing).
#[derive(Debug)]
pub(crate) struct Pacer {
    last_pts: Option<i64>,
    /// Arrival times of the last `WINDOW` access units, oldest first.
    arrivals: std::collections::VecDeque<i64>,
    /// Frame interval (90 kHz ticks), 40 ms until the window says otherwise.
    interval: i64,
}

impl Pacer {
    const MAX_LEAD: i64 = 18_000;
    const WINDOW: usize = 32;
    /// Arrivals needed before the window's estimate replaces the 40 ms default.
    const MIN_SAMPLES: usize = 8;

    pub(crate) fn new() -> Self {
        Self { last_pts: None, arrivals: std::collections::VecDeque::with_capacity(Self::WINDOW), interval: 3_600 }
    }

    /// The pts of an access unit that arrived at `arrival` (90 kHz ticks).
    pub(crate) fn stamp(&mut self, arrival: i64) -> i64 {
        if self.arrivals.back().is_some_and(|&last| arrival - last >= 90_000) {
            self.arrivals.clear(); // a pause of a second or more: the old rate says nothing
        }
        if self.arrivals.len() == Self::WINDOW {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(arrival);
        if self.arrivals.len() >= Self::MIN_SAMPLES {
            let span = arrival - self.arrivals[0];
            let interval = span / (self.arrivals.len() as i64 - 1);
            if interval > 0 {
                self.interval = interval;
            }
        }
        let pts = match self.last_pts {
            None => arrival,
            Some(last) => {
                let spaced = arrival.max(last + self.interval.max(1));
                if spaced - arrival > Self::MAX_LEAD {
                    // Far ahead: the source really runs faster than the window says. Close the
                    // gap by half an interval per frame rather than collapsing to `last + 1`.
                    arrival.max(last + (self.interval / 2).max(1))
                } else {
                    spaced
                }
            }
        };
        self.last_pts = Some(pts);
        pts
    }
}

/// The command as a shell would show it, for the log (masked by the caller).
fn command_line(cfg: &FfmpegConfig, args: &[String]) -> String {
    std::iter::once(cfg.binary.display().to_string()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ")
}

/// The full argument list ffmpeg is started with.
pub(crate) fn arguments(cfg: &FfmpegConfig) -> Vec<String> {
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "warning"].map(String::from).into();
    args.extend(cfg.input.iter().cloned());
    args.extend(cfg.encode.iter().cloned());
    let format = match cfg.codec {
        VideoCodecName::H264 => "h264",
        VideoCodecName::H265 => "hevc",
    };
    args.extend(["-an", "-f", format, "-flush_packets", "1", "pipe:1"].map(String::from));
    args
}

pub(super) fn spawn(
    name: &str,
    cfg: &FfmpegConfig,
    sink: FrameSink,
    cancel: CancellationToken,
    stats: Arc<EdgeStats>,
) -> tokio::task::JoinHandle<()> {
    let stream = name.to_owned();
    let cfg = cfg.clone();
    tokio::spawn(async move { supervise(stream, cfg, sink, cancel, stats).await })
}

/// Runs ffmpeg until cancelled, restarting it with backoff when it exits on its own.
async fn supervise(
    stream: String,
    cfg: FfmpegConfig,
    mut sink: FrameSink,
    cancel: CancellationToken,
    stats: Arc<EdgeStats>,
) {
    let backoff_cfg =
        BackoffConfig::try_new(Duration::from_millis(500), Duration::from_secs(15), STABLE_RUN).unwrap_or_default();
    let mut backoff = Backoff::new(backoff_cfg, u64::from(std::process::id()) ^ unix_micros());
    let mut seq: u64 = 0;
    let epoch = Instant::now();
    let mut last_reason = String::new();
    loop {
        let started = Instant::now();
        match run_once(&stream, &cfg, &mut sink, &cancel, &stats, &mut seq, epoch).await {
            Exit::Cancelled | Exit::SinkClosed => break,
            Exit::CannotStart(reason) => {
                warn!(%stream, %reason, "ffmpeg source failed");
                sink.fail(reason);
                break;
            }
            Exit::Ended(reason) if seq == 0 => {
                // It never produced a frame: tell the viewers now.
                warn!(%stream, %reason, "ffmpeg could not start the stream");
                sink.fail(reason);
                break;
            }
            Exit::Ended(reason) => {
                backoff.connected(started);
                backoff.disconnected(Instant::now());
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if reason == last_reason {
                    tracing::debug!(%stream, %reason, retry_in_ms, "ffmpeg source ended again; restarting");
                } else {
                    warn!(%stream, %reason, retry_in_ms, "ffmpeg source ended; restarting");
                    last_reason = reason;
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
    }
}

enum Exit {
    Cancelled,
    SinkClosed,
    /// The executable is missing or not executable: retrying cannot help.
    CannotStart(String),
    Ended(String),
}

async fn run_once(
    stream: &str,
    cfg: &FfmpegConfig,
    sink: &mut FrameSink,
    cancel: &CancellationToken,
    stats: &EdgeStats,
    seq: &mut u64,
    epoch: Instant,
) -> Exit {
    let args = arguments(cfg);
    let mut child = match Command::new(&cfg.binary)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own systemd notifications would be taken for the edge's.
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) => {
            return Exit::CannotStart(format!(
                "cannot run {}: {e} (install ffmpeg or set ffmpeg.binary)",
                cfg.binary.display()
            ));
        }
        Err(e) => return Exit::Ended(format!("cannot start {}: {e}", cfg.binary.display())),
    };
    EdgeStats::inc(&stats.sources_started);
    let secrets = Secrets::of_ffmpeg(cfg);
    info!(%stream, pid = child.id(), command = %secrets.scrub(&command_line(cfg, &args)), "ffmpeg started");
    // Its messages go to the log; the last one explains an exit.
    let stderr = child.stderr.take().map(|stderr| {
        let stream = stream.to_owned();
        tokio::spawn(async move {
            let mut last = None;
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = secrets.scrub(&line);
                warn!(%stream, "ffmpeg: {line}");
                last = Some(line);
            }
            last
        })
    });
    let exit = match child.stdout.take() {
        Some(stdout) => pump(stream, cfg.codec, stdout, sink, cancel, seq, epoch).await,
        None => Exit::Ended("ffmpeg has no stdout".into()),
    };
    let status = reap(&mut child).await;
    EdgeStats::inc(&stats.sources_stopped);
    match exit {
        Exit::Ended(reason) => {
            // Its stderr ends with the process; what it said last is why it stopped.
            let last = match stderr {
                Some(task) => {
                    tokio::time::timeout(Duration::from_secs(1), task).await.ok().and_then(Result::ok).flatten()
                }
                None => None,
            };
            Exit::Ended(match last {
                Some(said) => format!("ffmpeg exited ({status}): {said}"),
                None => format!("{reason} ({status})"),
            })
        }
        other => {
            info!(%stream, %status, "ffmpeg stopped");
            other
        }
    }
}

/// Reads access units from ffmpeg's stdout into the sink.
async fn pump(
    stream: &str,
    codec: VideoCodecName,
    mut stdout: tokio::process::ChildStdout,
    sink: &mut FrameSink,
    cancel: &CancellationToken,
    seq: &mut u64,
    epoch: Instant,
) -> Exit {
    let syntax = match codec {
        VideoCodecName::H264 => VideoCodec::H264,
        VideoCodecName::H265 => VideoCodec::H265,
    };
    let mut splitter = AccessUnitSplitter::new(syntax, MAX_ACCESS_UNIT);
    let mut buf = vec![0u8; 64 * 1024];
    let mut aus = Vec::new();
    let mut have_header = false;
    let mut pacer = Pacer::new();
    // B-frames arrive in decode order: the stamps are decode times, and the presentation
    // times come from the pictures' order in the bitstream.
    let mut reorder =
        Reorder::new(if syntax == VideoCodec::H265 { Codec::H265 } else { Codec::H264 }, VIDEO_CLOCK_RATE);
    loop {
        let n = tokio::select! {
            r = stdout.read(&mut buf) => match r {
                Ok(0) => return Exit::Ended("ffmpeg closed its output".into()),
                Ok(n) => n,
                Err(e) => return Exit::Ended(format!("reading ffmpeg output: {e}")),
            },
            () = cancel.cancelled() => return Exit::Cancelled,
        };
        if let Err(e) = splitter.push(&buf[..n], &mut aus) {
            warn!(%stream, error = %e, "discarding corrupt ffmpeg output");
        }
        for au in aus.drain(..) {
            if let Some(track) = video_track(codec, &au) {
                let header = StreamHeader { tracks: vec![track] };
                match header.validate() {
                    Ok(()) => {
                        sink.set_header(header);
                        have_header = true;
                    }
                    Err(e) => warn!(%stream, error = %e, "ignoring unusable parameter sets"),
                }
            }
            if !have_header {
                continue; // nothing is decodable before the first SPS/PPS
            }
            // Raw H.264/H.265 carries no timestamps: stamp arrival, spread within bursts.
            let arrival = (epoch.elapsed().as_micros() * u128::from(VIDEO_CLOCK_RATE) / 1_000_000) as i64;
            let Times { pts, dts } = reorder.times(&au.data, Known::Dts(pacer.stamp(arrival)));
            let frame = Frame {
                track: 0,
                flags: FrameFlags::keyframe(au.keyframe),
                seq: *seq,
                pts,
                dts,
                capture_us: unix_micros(),
                payload: au.data,
            };
            *seq += 1;
            if sink.push(frame).is_err() {
                return Exit::SinkClosed;
            }
        }
    }
}

/// The video track an access unit's parameter sets describe, if it carries all of them.
fn video_track(codec: VideoCodecName, au: &AccessUnit) -> Option<TrackInfo> {
    match codec {
        VideoCodecName::H264 => Some(TrackInfo::h264(0, au.sps.clone()?, au.pps.clone()?)),
        VideoCodecName::H265 => Some(TrackInfo::h265(0, au.vps.clone()?, au.sps.clone()?, au.pps.clone()?)),
    }
}

/// Kills the process if it still runs and waits for it, so no zombie is left.
async fn reap(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return status.to_string();
    }
    let _ = child.start_kill();
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => "did not exit within 5 s of SIGKILL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_spread_and_timestamps_follow_arrival() {
        let mut p = Pacer::new();
        // 25 fps, but frames come in pairs (two access units per read).
        let mut out = Vec::new();
        for pair in 0..20i64 {
            let arrival = pair * 7_200;
            out.push(p.stamp(arrival));
            out.push(p.stamp(arrival));
        }
        assert!(out.windows(2).all(|w| w[1] > w[0]), "strictly increasing: {out:?}");
        let gaps: Vec<i64> = out.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[10..].iter().all(|g| (1_800..=5_400).contains(g)), "about one frame apart: {gaps:?}");
        let last_arrival = 19 * 7_200;
        assert!(out[39] - last_arrival <= Pacer::MAX_LEAD, "never far ahead of arrival");
        // A long pause: timestamps jump to arrival, not one interval on.
        assert_eq!(p.stamp(1_000_000), 1_000_000);
    }

    #[test]
    fn a_stall_then_a_burst_keeps_frames_a_frame_apart() {
        let mut p = Pacer::new();
        let mut out = Vec::new();
        // 2 s at 25 fps, then a 300 ms stall and the 8 delayed frames 100 µs apart, then steady.
        let mut t = 0;
        for _ in 0..50 {
            out.push(p.stamp(t));
            t += 3_600;
        }
        t += 27_000;
        for _ in 0..8 {
            out.push(p.stamp(t));
            t += 9;
        }
        for _ in 0..50 {
            t += 3_600;
            out.push(p.stamp(t));
        }
        let gaps: Vec<i64> = out.windows(2).map(|w| w[1] - w[0]).collect();
        // A player rounding to 1/25 s needs more than half a frame between timestamps.
        assert!(gaps.iter().all(|&g| g > 1_800), "at least half a frame apart: {gaps:?}");
        assert!(out.last().unwrap() - t <= Pacer::MAX_LEAD, "caught up with arrival");
    }

    #[test]
    fn output_arguments_follow_the_user_arguments() {
        let cfg = FfmpegConfig {
            input: vec!["-i".into(), "x.mp4".into()],
            encode: vec!["-c:v".into(), "copy".into()],
            binary: "ffmpeg".into(),
            codec: VideoCodecName::H264,
        };
        let args = arguments(&cfg);
        let i = args.iter().position(|a| a == "x.mp4").unwrap();
        let f = args.iter().position(|a| a == "h264").unwrap();
        assert!(i < f);
        assert_eq!(args.last().map(String::as_str), Some("pipe:1"));
    }
}
