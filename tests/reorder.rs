//! Decode and presentation times of B-frame streams derived from the bitstream
//! (`mediamesh_media::reorder`), checked against what ffmpeg itself assigns: x264 and x265
//! encode with B-frames (and B-pyramids) into MPEG-TS, whose packets carry both times; the raw
//! stream is split into access units and each gets its missing time from the one a source knows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use mediamesh_media::Codec;
use mediamesh_media::annexb::{AccessUnitSplitter, VideoCodec};
use mediamesh_media::reorder::{Known, Reorder, Times};
use mediamesh_testkit::require;
use serde_json::Value;

const FRAME: i64 = 3600; // 90 kHz at 25 fps

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The access units of an encode in decode order, with ffmpeg's times for each.
fn encode(codec: VideoCodec, args: &[&str]) -> Vec<(Vec<u8>, Times)> {
    let dir =
        std::env::temp_dir().join(format!("mm-reorder-{}-{}", std::process::id(), mediamesh_testkit::unix_micros()));
    std::fs::create_dir_all(&dir).unwrap();
    let ts = dir.join("out.ts");
    let raw = dir.join("out.raw");
    let (ts_s, raw_s) = (ts.to_str().unwrap(), raw.to_str().unwrap());
    let mut encode = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-frames:v",
        "75",
    ];
    encode.extend_from_slice(args);
    encode.push(ts_s);
    run("ffmpeg", &encode);
    let format = if codec == VideoCodec::H264 { "h264" } else { "hevc" };
    run("ffmpeg", &["-hide_banner", "-loglevel", "error", "-y", "-i", ts_s, "-c", "copy", "-f", format, raw_s]);
    let probe = run(
        "ffprobe",
        &["-v", "error", "-select_streams", "v", "-show_entries", "packet=pts,dts", "-of", "json", ts_s],
    );
    let probe: Value = serde_json::from_slice(&probe).unwrap();
    let times: Vec<Times> = probe["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Times { pts: p["pts"].as_i64().unwrap(), dts: p["dts"].as_i64().unwrap() })
        .collect();
    let mut splitter = AccessUnitSplitter::new(codec, 1 << 20);
    let mut aus = Vec::new();
    splitter.push(&std::fs::read(&raw).unwrap(), &mut aus).unwrap();
    splitter.flush(&mut aus).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(aus.len(), times.len(), "one access unit per packet");
    aus.into_iter().map(|au| au.data.to_vec()).zip(times).collect()
}

/// Derives the times from each known one and checks them against ffmpeg's.
fn check(codec: VideoCodec, aus: &[(Vec<u8>, Times)], reordered: bool) {
    let media_codec = if codec == VideoCodec::H264 { Codec::H264 } else { Codec::H265 };
    assert_eq!(aus.iter().any(|(_, t)| t.pts != t.dts), reordered, "the encode has B-frames: {reordered}");

    // A raw stream: decode times known (as arrival stamps), presentation times derived. They
    // may sit a constant later than ffmpeg's (a deeper declared reorder), never earlier.
    let mut r = Reorder::new(media_codec, 90_000);
    let derived: Vec<Times> = aus.iter().map(|(au, t)| r.times(au, Known::Dts(t.dts))).collect();
    let shift = derived[0].pts - aus[0].1.pts;
    assert!((0..=2 * FRAME).contains(&shift), "shift {shift}");
    for ((_, truth), got) in aus.iter().zip(&derived) {
        assert_eq!(got.pts - truth.pts, shift, "pts from dts: {got:?} for {truth:?}");
        assert!(got.pts >= got.dts, "{got:?}");
    }

    // An RTSP camera: presentation times known, decode times derived: increasing by one
    // frame each, never after the picture's presentation, and at a constant distance from
    // ffmpeg's (after the first GOP's estimate of the frame duration settles).
    let mut r = Reorder::new(media_codec, 90_000);
    let derived: Vec<Times> = aus.iter().map(|(au, t)| r.times(au, Known::Pts(t.pts))).collect();
    for w in derived.windows(2).skip(3) {
        assert_eq!(w[1].dts - w[0].dts, FRAME, "{w:?}");
    }
    let shift = derived[10].dts - aus[10].1.dts;
    for ((_, truth), got) in aus.iter().zip(&derived).skip(3) {
        assert_eq!(got.pts, truth.pts);
        assert!(got.dts <= got.pts, "{got:?}");
        assert_eq!(got.dts - truth.dts, shift, "dts from pts: {got:?} for {truth:?}");
    }
    if !reordered {
        assert!(derived.iter().all(|t| t.pts == t.dts), "no B-frames, no offsets");
    }
}

#[test]
fn h264_b_frames_with_a_pyramid() {
    require::ffmpeg();
    let aus = encode(
        VideoCodec::H264,
        &["-c:v", "libx264", "-bf", "3", "-b_strategy", "0", "-g", "30", "-x264-params", "b-pyramid=normal"],
    );
    check(VideoCodec::H264, &aus, true);
}

#[test]
fn h264_b_frames_without_a_pyramid() {
    require::ffmpeg();
    let aus = encode(VideoCodec::H264, &["-c:v", "libx264", "-bf", "2", "-g", "25", "-x264-params", "b-pyramid=none"]);
    check(VideoCodec::H264, &aus, true);
}

#[test]
fn h264_without_b_frames_keeps_the_known_time() {
    require::ffmpeg();
    let aus = encode(VideoCodec::H264, &["-c:v", "libx264", "-profile:v", "main", "-bf", "0", "-g", "25"]);
    check(VideoCodec::H264, &aus, false);
}

#[test]
fn h265_b_frames() {
    require::ffmpeg();
    let aus = encode(VideoCodec::H265, &["-c:v", "libx265", "-x265-params", "bframes=3:keyint=30:log-level=error"]);
    check(VideoCodec::H265, &aus, true);
}
