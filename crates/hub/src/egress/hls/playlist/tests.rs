use bytes::Bytes;
use mediamesh_media::{Codec, FrameFlags, TrackInfo};

use super::*;

/// SPS and PPS of a 320x240 stream (libx264).
const SPS: &[u8] = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";
const PPS: &[u8] = b"\x68\xce\x0f\xc8";

fn header() -> StreamHeader {
    StreamHeader {
        tracks: vec![
            TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS)),
            TrackInfo::audio(1, Codec::Aac, 48_000, 2, Some(Bytes::from_static(&[0x11, 0x90]))),
        ],
    }
}

/// Video frame `n` at 25 fps, a keyframe every `gop`.
fn video(n: i64, gop: i64) -> Frame {
    Frame {
        track: 0,
        flags: FrameFlags::keyframe(n % gop == 0),
        seq: n as u64,
        pts: 1000 + n * 3600,
        dts: 1000 + n * 3600,
        capture_us: 1_764_000_000_000_000 + n as u64 * 40_000,
        payload: Bytes::from_static(b"\x00\x00\x00\x01\x65\x88\x84"),
    }
}

fn playlist(cfg: PlaylistConfig) -> TrackPlaylist {
    TrackPlaylist::new(cfg, &header(), 0, Cut::Keyframes).unwrap()
}

/// Every `(key, value)` of the tags named `tag` in order.
fn tags<'a>(text: &'a str, tag: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(tag)).collect()
}

fn part_durations(text: &str) -> Vec<f64> {
    tags(text, "#EXT-X-PART:DURATION=").iter().map(|p| p.split(',').next().unwrap().parse().unwrap()).collect()
}

#[test]
fn parts_stay_within_the_part_target_and_segments_start_at_keyframes() {
    let cfg = PlaylistConfig::default();
    let mut p = playlist(cfg);
    let mut starts = Vec::new();
    for n in 0..260 {
        if let Some(dts) = p.push(&video(n, 50)) {
            starts.push((dts - 1000) / 3600);
        }
    }
    // A GOP of 50 frames (2 s) and segments of at least 1 s: a segment per GOP.
    assert_eq!(starts, vec![0, 50, 100, 150, 200, 250]);
    let text = p.render("video-", "");
    let durations = part_durations(&text);
    assert!(!durations.is_empty());
    assert!(durations.iter().all(|d| *d <= 0.2 + 1e-9), "{durations:?}");
    // Five 40 ms frames per part: every part is exactly the target.
    assert!(durations.iter().all(|d| (*d - 0.2).abs() < 1e-9), "{durations:?}");
    // Every segment's first part is independent, and only those (one keyframe per segment).
    let independent = tags(&text, "#EXT-X-PART:").iter().filter(|p| p.contains("INDEPENDENT=YES")).count();
    let segments_with_parts = text.lines().filter(|l| l.contains(".0.mp4\",INDEPENDENT=YES")).count();
    assert_eq!(independent, segments_with_parts);
    // Complete segments last 2 s and TARGETDURATION covers them.
    let extinf: Vec<f64> = tags(&text, "#EXTINF:").iter().map(|d| d.trim_end_matches(',').parse().unwrap()).collect();
    assert!(extinf.iter().all(|d| (*d - 2.0).abs() < 1e-9), "{extinf:?}");
    assert_eq!(tags(&text, "#EXT-X-TARGETDURATION:"), vec!["2"]);
    assert_eq!(tags(&text, "#EXT-X-PART-INF:"), vec!["PART-TARGET=0.200"]);
    assert_eq!(tags(&text, "#EXT-X-SERVER-CONTROL:"), vec!["CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600"]);
    // The preload hint names the next part of the segment in progress.
    let progress = p.progress();
    let (msn, part) = progress.part.unwrap();
    assert_eq!(
        tags(&text, "#EXT-X-PRELOAD-HINT:"),
        vec![format!("TYPE=PART,URI=\"video-part-{msn}.{}.mp4\"", part + 1)]
    );
    assert!(p.part(msn, part).is_some() && p.part(msn, part + 1).is_none());
}

#[test]
fn media_sequence_numbers_increase_and_the_window_slides() {
    let cfg = PlaylistConfig { window: 3, ..Default::default() };
    let mut p = playlist(cfg);
    let mut first_msns = Vec::new();
    for n in 0..(25 * 12) {
        p.push(&video(n, 25));
        if n % 25 == 24 {
            let text = p.render("video-", "");
            first_msns.push(tags(&text, "#EXT-X-MEDIA-SEQUENCE:")[0].parse::<u64>().unwrap());
            let segs: Vec<u64> = text
                .lines()
                .filter_map(|l| l.strip_prefix("video-seg-"))
                .map(|s| s.trim_end_matches(".mp4").parse().unwrap())
                .collect();
            assert!(segs.len() <= 3, "{segs:?}");
            assert!(segs.windows(2).all(|w| w[1] == w[0] + 1), "{segs:?}");
        }
    }
    assert!(first_msns.windows(2).all(|w| w[1] >= w[0]), "{first_msns:?}");
    assert!(*first_msns.last().unwrap() > 5, "the window moved: {first_msns:?}");
    // What slid out is gone.
    assert!(p.segment(0).is_none() && p.part(0, 0).is_none());
}

#[test]
fn blocking_requests_wait_for_a_future_part_and_refuse_one_too_far() {
    let mut p = playlist(PlaylistConfig::default());
    for n in 0..60 {
        p.push(&video(n, 25));
    }
    let now = p.progress();
    let (msn, part) = now.part.unwrap();
    assert_eq!(now.answer(Block { msn, part: Some(part) }), BlockAnswer::Ready);
    assert_eq!(now.answer(Block { msn, part: Some(part + 1) }), BlockAnswer::Wait);
    assert_eq!(now.answer(Block { msn: msn + 2, part: Some(0) }), BlockAnswer::Wait);
    assert_eq!(now.answer(Block { msn: msn + 3, part: None }), BlockAnswer::TooFar);
    assert_eq!(now.answer(Block { msn: msn - 1, part: None }), BlockAnswer::Ready, "a complete segment");
    assert_eq!(now.answer(Block { msn, part: None }), BlockAnswer::Wait, "in progress");
    // The next part arrives with the frames after it: the same request is now answered.
    let mut n = 60;
    while p.progress() == now {
        p.push(&video(n, 25));
        n += 1;
    }
    assert_eq!(p.progress().answer(Block { msn, part: Some(part + 1) }), BlockAnswer::Ready);
}

#[test]
fn a_new_header_starts_a_segment_with_a_discontinuity_and_a_new_map() {
    let mut p = playlist(PlaylistConfig::default());
    for n in 0..40 {
        p.push(&video(n, 25));
    }
    p.set_header(&header()).unwrap();
    for n in 40..60 {
        p.push(&video(n, 25));
    }
    let text = p.render("video-", "?token=abc");
    assert_eq!(tags(&text, "#EXT-X-DISCONTINUITY").len(), 1, "{text}");
    assert_eq!(
        tags(&text, "#EXT-X-MAP:"),
        vec!["URI=\"video-init-0.mp4?token=abc\"", "URI=\"video-init-1.mp4?token=abc\""]
    );
    assert!(p.init(1).is_some());
    assert!(text.lines().filter(|l| l.contains(".mp4")).all(|l| l.contains("?token=abc")), "{text}");
}

#[test]
fn audio_follows_the_video_segments() {
    let mut a = TrackPlaylist::new(PlaylistConfig::default(), &header(), 1, Cut::Follow).unwrap();
    let frame = |n: i64| Frame {
        track: 1,
        flags: FrameFlags::keyframe(true),
        seq: n as u64,
        pts: n * 1024,
        dts: n * 1024,
        capture_us: 0,
        payload: Bytes::from_static(b"\x21\x10"),
    };
    let mut starts = Vec::new();
    for n in 0..200 {
        // The video started segments at 0 s, 2 s and 4 s (90 kHz).
        if n == 0 {
            a.segment_boundary(0, 90_000);
        }
        if n == 90 {
            a.segment_boundary(180_000, 90_000);
        }
        if n == 185 {
            a.segment_boundary(360_000, 90_000);
        }
        if let Some(dts) = a.push(&frame(n)) {
            starts.push(dts);
        }
    }
    // 2 s at 48 kHz = 96,000 ticks: the first frame at or after it is frame 94 (96,256).
    assert_eq!(starts, vec![0, 94 * 1024, 188 * 1024]);
    let text = a.render("audio-", "");
    assert!(part_durations(&text).iter().all(|d| *d <= 0.2 + 1e-9), "{text}");
    assert!(tags(&text, "#EXT-X-PART:").iter().all(|p| p.contains("INDEPENDENT=YES")), "audio parts are independent");
}

#[test]
fn program_date_time_is_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_764_000_123_456_789), "2025-11-24T16:02:03.456Z");
    assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
}

#[test]
fn one_rendering_is_shared_until_the_playlist_changes() {
    let mut p = playlist(PlaylistConfig::default());
    for n in 0..30 {
        p.push(&video(n, 25));
    }
    let a = p.render_shared("video-", "");
    let b = p.render_shared("video-", "");
    assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes for every waiting client");
    assert_eq!(&a[..], p.render("video-", "").as_bytes());
    let with_token = p.render_shared("video-", "?token=x");
    assert!(std::str::from_utf8(&with_token).unwrap().contains("?token=x"));
    // The next part changes the text.
    let before = p.progress();
    let mut n = 30;
    while p.progress() == before {
        p.push(&video(n, 25));
        n += 1;
    }
    let c = p.render_shared("video-", "");
    assert_ne!(&a[..], &c[..]);
    assert_eq!(&c[..], p.render("video-", "").as_bytes());
}
