//! The fMP4 packaging read back by a real demuxer: ffmpeg encodes H.264 or H.265 and AAC, the
//! media crate's splitter and muxer package them as MSE viewers get them (an init segment, then
//! one fragment per frame), and ffprobe reads the result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use mediamesh_media::annexb::{AccessUnitSplitter, VideoCodec};
use mediamesh_media::fmp4::Muxer;
use mediamesh_media::{Codec, Frame, FrameFlags, StreamHeader, TrackInfo, aac};
use mediamesh_testkit::require;
use serde_json::Value;

const FPS: i64 = 25;
const SECONDS: i64 = 2;

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-hide_banner", "-loglevel", "error", "-y"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The raw AAC frames of an ADTS stream and its AudioSpecificConfig.
fn adts_frames(data: &[u8]) -> (Vec<Bytes>, [u8; 2]) {
    let (mut frames, mut config, mut at) = (Vec::new(), None, 0);
    while at + 7 <= data.len() {
        assert_eq!((data[at], data[at + 1] & 0xf0), (0xff, 0xf0), "ADTS sync at {at}");
        let header_len = if data[at + 1] & 1 == 1 { 7 } else { 9 };
        let len =
            (usize::from(data[at + 3] & 3) << 11) | (usize::from(data[at + 4]) << 3) | usize::from(data[at + 5] >> 5);
        let object_type = (data[at + 2] >> 6) + 1;
        let index = (data[at + 2] >> 2) & 0x0f;
        let channels = ((data[at + 2] & 1) << 2) | (data[at + 3] >> 6);
        config.get_or_insert([(object_type << 3) | (index >> 1), ((index & 1) << 7) | (channels << 3)]);
        frames.push(Bytes::copy_from_slice(&data[at + header_len..at + len]));
        at += len;
    }
    (frames, config.unwrap())
}

/// Encodes two seconds of test video (and a tone), packages them, and returns ffprobe's view.
fn package_and_probe(dir: &Path, codec: VideoCodec) -> Value {
    let (encoder, format, name) = match codec {
        VideoCodec::H264 => ("libx264", "h264", "video.h264"),
        VideoCodec::H265 => ("libx265", "hevc", "video.h265"),
    };
    let video_path = dir.join(name);
    let audio_path = dir.join("audio.aac");
    let duration = SECONDS.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size=320x240:rate={FPS}"),
        "-t",
        &duration,
        "-c:v",
        encoder,
        "-bf",
        "0",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-f",
        format,
        video_path.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &duration,
        "-ac",
        "2",
        "-c:a",
        "aac",
        "-f",
        "adts",
        audio_path.to_str().unwrap(),
    ]);
    let mut splitter = AccessUnitSplitter::new(codec, 4 << 20);
    let mut units = Vec::new();
    splitter.push(&std::fs::read(&video_path).unwrap(), &mut units).unwrap();
    splitter.flush(&mut units).unwrap();
    assert_eq!(units.len() as i64, FPS * SECONDS);
    let first = &units[0];
    let video = match codec {
        VideoCodec::H264 => TrackInfo::h264(0, first.sps.clone().unwrap(), first.pps.clone().unwrap()),
        VideoCodec::H265 => {
            TrackInfo::h265(0, first.vps.clone().unwrap(), first.sps.clone().unwrap(), first.pps.clone().unwrap())
        }
    };
    let (aac_frames, config) = adts_frames(&std::fs::read(&audio_path).unwrap());
    assert_eq!(aac::parse_config(&config).unwrap().sample_rate, 48_000);
    let audio = TrackInfo::audio(1, Codec::Aac, 48_000, 2, Some(Bytes::copy_from_slice(&config)));
    let mut muxer = Muxer::new(&StreamHeader { tracks: vec![video, audio] }).unwrap();

    // Interleave by time as an edge would send them; timestamps start away from zero.
    let mut frames: Vec<Frame> = units
        .iter()
        .enumerate()
        .map(|(i, u)| Frame {
            track: 0,
            flags: FrameFlags::keyframe(u.keyframe),
            seq: i as u64,
            pts: 900_000 + i as i64 * 90_000 / FPS,
            dts: 900_000 + i as i64 * 90_000 / FPS,
            capture_us: 0,
            payload: u.data.clone(),
        })
        .chain(aac_frames.into_iter().enumerate().map(|(i, payload)| Frame {
            track: 1,
            flags: FrameFlags::keyframe(true),
            seq: i as u64,
            pts: 480_000 + i as i64 * 1024,
            dts: 480_000 + i as i64 * 1024,
            capture_us: 0,
            payload,
        }))
        .collect();
    frames.sort_by_key(|f| (f.dts * 1_000_000 / if f.track == 0 { 90_000 } else { 48_000 }, f.track));
    let mut out = muxer.init_segment().to_vec();
    for f in &frames {
        out.extend_from_slice(&muxer.frame_fragment(f).unwrap().unwrap());
    }
    let mp4 = dir.join("out.mp4");
    std::fs::write(&mp4, &out).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_packets", "-count_frames", "-of", "json"])
        .arg(&mp4)
        .output()
        .unwrap();
    assert!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    // Decoding every frame must be clean too.
    let decode =
        Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&mp4).args(["-f", "null", "-"]).output().unwrap();
    assert!(decode.status.success() && decode.stderr.is_empty(), "{}", String::from_utf8_lossy(&decode.stderr));
    serde_json::from_slice(&probe.stdout).unwrap()
}

fn check(probe: &Value, video_codec: &str) {
    let streams = probe["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{probe}");
    let v = &streams[0];
    assert_eq!(v["codec_name"], video_codec);
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(v["nb_read_frames"].as_str(), Some("50"));
    assert_eq!(v["r_frame_rate"], "25/1");
    let a = &streams[1];
    assert_eq!(
        (a["codec_name"].as_str(), a["sample_rate"].as_str(), a["channels"].as_u64()),
        (Some("aac"), Some("48000"), Some(2))
    );
    for (index, step) in [(0, 3600), (1, 1024)] {
        let ts: Vec<i64> = probe["packets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["stream_index"] == index)
            .map(|p| p["dts"].as_i64().unwrap())
            .collect();
        assert!(ts.len() > 40, "stream {index}: {} packets", ts.len());
        assert!(ts.windows(2).all(|w| w[1] - w[0] == step), "stream {index}: decode times {ts:?}");
    }
    // Both tracks' first frames were taken at the same moment (10 s on their own clocks).
    let first = |index: i64| {
        probe["packets"].as_array().unwrap().iter().find(|p| p["stream_index"] == index).unwrap()["dts_time"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!((first(0) - 0.0).abs() < 1e-6 && (first(1) - 0.0).abs() < 1e-6, "both tracks start at zero");
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mm-fmp4-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn ffprobe_reads_h264_and_aac_fragments() {
    require::ffmpeg();
    let dir = scratch("h264");
    check(&package_and_probe(&dir, VideoCodec::H264), "h264");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ffprobe_reads_h265_and_aac_fragments() {
    require::ffmpeg();
    let dir = scratch("h265");
    check(&package_and_probe(&dir, VideoCodec::H265), "hevc");
    std::fs::remove_dir_all(dir).unwrap();
}
