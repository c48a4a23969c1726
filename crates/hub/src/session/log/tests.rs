use bytes::Bytes;
use mediamesh_media::{Frame, FrameFlags, StreamHeader, TrackInfo};

use super::*;

const SPS: &[u8] = b"\x67\x42\xc0\x0d\xda\x05\x07\xec\x04\x40\x00\x00\x03\x00\x40\x00\x00\x0c\x83\xc5\x0a\xa8";
const PPS: &[u8] = b"\x68\xce\x0f\xc8";

fn log(max_frames: usize, max_bytes: usize, lag: usize) -> FrameLog {
    let l = FrameLog::new(LogConfig {
        max_frames,
        max_bytes,
        viewer_max_lag_bytes: lag,
        viewer_max_lag_us: u64::MAX,
        timeline: OutageTimeline::WallClock,
    });
    l.set_header(StreamHeader { tracks: vec![TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS))] })
        .unwrap();
    l
}

/// A log bounded only by `viewer_max_lag_us` in practice.
fn log_with_lag_us(viewer_max_lag_us: u64) -> FrameLog {
    let l = FrameLog::new(LogConfig {
        max_frames: 1000,
        max_bytes: 1 << 20,
        viewer_max_lag_bytes: 1 << 20,
        viewer_max_lag_us,
        timeline: OutageTimeline::WallClock,
    });
    l.set_header(StreamHeader { tracks: vec![TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS))] })
        .unwrap();
    l
}

fn frame(seq: u64, key: bool, len: usize) -> Frame {
    Frame {
        track: 0,
        flags: FrameFlags::keyframe(key),
        seq,
        pts: seq as i64 * 3600,
        dts: seq as i64 * 3600,
        capture_us: 0,
        payload: Bytes::from(vec![0u8; len]),
    }
}

/// Pushes frames 0..n with a keyframe every `gop`.
fn fill(l: &FrameLog, from: u64, n: u64, gop: u64, len: usize) {
    for s in from..from + n {
        l.push(frame(s, s % gop == 0, len), 0).unwrap();
    }
}

fn read_all(l: &FrameLog, c: &mut Cursor) -> (Vec<u64>, ReadStatus) {
    let mut out = Vec::new();
    let st = l.read(c, usize::MAX, &mut out);
    (out.iter().map(|e| e.frame.seq).collect(), st)
}

#[test]
fn new_viewer_starts_at_the_newest_keyframe() {
    let l = log(100, 1 << 20, 1 << 20);
    fill(&l, 0, 23, 10, 10);
    let mut c = l.subscribe();
    let (seqs, st) = read_all(&l, &mut c);
    assert_eq!(seqs, (20..23).collect::<Vec<_>>());
    assert_eq!(st.skipped, 0);
}

#[test]
fn viewer_before_any_keyframe_waits_for_one_without_counting_skips() {
    let l = log(100, 1 << 20, 1 << 20);
    l.push(frame(0, false, 10), 0).unwrap();
    let mut c = l.subscribe();
    l.push(frame(1, false, 10), 0).unwrap();
    assert_eq!(read_all(&l, &mut c), (vec![], ReadStatus::default()));
    l.push(frame(2, true, 10), 0).unwrap();
    l.push(frame(3, false, 10), 0).unwrap();
    assert_eq!(read_all(&l, &mut c), (vec![2, 3], ReadStatus::default()));
}

#[test]
fn frames_are_shared_not_copied() {
    let l = log(100, 1 << 20, 1 << 20);
    fill(&l, 0, 5, 5, 1000);
    let (mut a, mut b) = (l.subscribe(), l.subscribe());
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    l.read(&mut a, usize::MAX, &mut va);
    l.read(&mut b, usize::MAX, &mut vb);
    for (x, y) in va.iter().zip(&vb) {
        assert!(Arc::ptr_eq(x, y));
        assert_eq!(x.frame.payload.as_ptr(), y.frame.payload.as_ptr());
    }
}

#[test]
fn bounds_hold_and_the_newest_gop_survives() {
    let l = log(10, 1 << 20, 1 << 30);
    fill(&l, 0, 1000, 7, 10);
    let s = l.stats();
    assert!(s.frames <= 10, "{s:?}");
    // A GOP longer than the bound is kept up to twice the bound.
    let l = log(10, 1 << 20, 1 << 30);
    fill(&l, 0, 15, 1000, 10);
    assert_eq!(l.stats().frames, 15);
    assert_eq!(read_all(&l, &mut l.subscribe()).0.first(), Some(&0));
    fill(&l, 15, 10, 1000, 10);
    assert_eq!(l.stats().frames, 10, "past twice the bound the keyframe goes too");
    assert!(read_all(&l, &mut l.subscribe()).0.is_empty(), "no keyframe: new viewers wait");
}

#[test]
fn byte_bound_holds() {
    let l = log(1000, 5000, 1 << 30);
    fill(&l, 0, 500, 10, 100);
    assert!(l.stats().bytes <= 5000);
}

#[test]
fn slow_cursor_resyncs_at_newest_keyframe_and_counts_skips() {
    let l = log(20, 1 << 20, 1 << 30);
    fill(&l, 0, 5, 10, 10);
    let mut c = l.subscribe();
    assert_eq!(read_all(&l, &mut c).0, vec![0, 1, 2, 3, 4]);
    fill(&l, 5, 50, 10, 10); // cursor at 5 falls out of the log (base is now > 5)
    let (seqs, st) = read_all(&l, &mut c);
    assert_eq!(seqs.first(), Some(&50), "resumes at the newest keyframe");
    assert_eq!(st.skipped, 45);
    assert_eq!(seqs, (50..55).collect::<Vec<_>>());
}

#[test]
fn lagging_by_bytes_resyncs_even_inside_the_log() {
    let l = log(1000, 1 << 30, 500);
    fill(&l, 0, 1, 10, 10);
    let mut c = l.subscribe();
    read_all(&l, &mut c);
    fill(&l, 1, 64, 10, 10); // 640 bytes behind, log still holds everything
    let (seqs, st) = read_all(&l, &mut c);
    assert_eq!(seqs.first(), Some(&60));
    assert_eq!(st.skipped, 59);
}

#[test]
fn reads_are_bounded_by_bytes_but_make_progress() {
    let l = log(100, 1 << 20, 1 << 30);
    fill(&l, 0, 10, 10, 100);
    let mut c = l.subscribe();
    let mut out = Vec::new();
    assert!(l.read(&mut c, 250, &mut out).more, "frames left after a bounded read");
    assert_eq!(out.len(), 3);
    out.clear();
    l.read(&mut c, 1, &mut out);
    assert_eq!(out.len(), 1, "at least one frame per read");
    out.clear();
    assert!(!l.read(&mut c, usize::MAX, &mut out).more, "caught up");
    assert_eq!(out.len(), 6);
}

#[test]
fn close_delivers_the_rest_then_the_reason() {
    let l = log(100, 1 << 20, 1 << 20);
    fill(&l, 0, 3, 10, 10);
    let mut c = l.subscribe();
    l.close("edge went away");
    assert_eq!(l.push(frame(3, false, 1), 0), Err(PushError::Closed));
    let (seqs, st) = read_all(&l, &mut c);
    assert_eq!(seqs, vec![0, 1, 2]);
    assert_eq!(st.ended.as_deref(), Some("edge went away"));
}

#[test]
fn frames_need_a_header_and_a_known_track() {
    let l = FrameLog::new(LogConfig {
        max_frames: 10,
        max_bytes: 100,
        viewer_max_lag_bytes: 100,
        viewer_max_lag_us: u64::MAX,
        timeline: OutageTimeline::WallClock,
    });
    assert_eq!(l.push(frame(7, true, 1), 0), Err(PushError::NoHeader { seq: 7 }));
    let l = log(10, 100, 100);
    let mut f = frame(8, true, 1);
    f.track = 3;
    assert_eq!(l.push(f, 0), Err(PushError::UnknownTrack { seq: 8, track: 3 }));
}

#[tokio::test]
async fn push_wakes_a_waiting_cursor() {
    let l = Arc::new(log(100, 1 << 20, 1 << 20));
    let mut c = l.subscribe();
    let mut out = Vec::new();
    l.read(&mut c, usize::MAX, &mut out);
    let l2 = l.clone();
    let pusher = tokio::spawn(async move { l2.push(frame(0, true, 1), 0).unwrap() });
    assert!(tokio::time::timeout(std::time::Duration::from_secs(5), c.changed()).await.unwrap());
    pusher.await.unwrap();
    l.read(&mut c, usize::MAX, &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn a_new_viewer_behind_the_lag_bound_waits_for_the_next_keyframe() {
    let l = log(1000, 1 << 30, 500);
    fill(&l, 0, 60, 100, 10); // one keyframe, 600 bytes back: beyond the 500-byte lag bound
    let mut c = l.subscribe();
    let (seqs, st) = read_all(&l, &mut c);
    assert!(seqs.is_empty());
    assert_eq!(st.skipped, 0, "nothing was skipped: the viewer had nothing yet");
    l.push(frame(60, true, 10), 0).unwrap();
    assert_eq!(read_all(&l, &mut c), (vec![60], ReadStatus::default()));
}

#[test]
fn audio_frames_are_not_sync_points_when_there_is_video() {
    let l = FrameLog::new(LogConfig {
        max_frames: 100,
        max_bytes: 1 << 20,
        viewer_max_lag_bytes: 1 << 20,
        viewer_max_lag_us: u64::MAX,
        timeline: OutageTimeline::WallClock,
    });
    let video = TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS));
    let audio = TrackInfo::audio(1, mediamesh_media::Codec::Pcma, 8000, 1, None);
    l.set_header(StreamHeader { tracks: vec![video, audio] }).unwrap();
    let mut a = frame(0, true, 10);
    a.track = 1;
    l.push(frame(1, false, 10), 0).unwrap();
    l.push(a, 0).unwrap();
    let mut c = l.subscribe();
    assert!(read_all(&l, &mut c).0.is_empty(), "an audio 'keyframe' is no place to start video");
    l.push(frame(2, true, 10), 0).unwrap();
    assert_eq!(read_all(&l, &mut c).0, vec![2]);
}

#[test]
fn a_viewer_too_far_behind_in_time_jumps_only_when_a_newer_keyframe_exists() {
    let l = log_with_lag_us(2_000_000);
    // One long group of pictures: 4 s at 25 fps.
    for s in 0..100u64 {
        l.push(frame(s, s == 0, 10), s * 40_000).unwrap();
    }
    let mut c = l.subscribe();
    let (seqs, st) = read_all(&l, &mut c);
    assert_eq!((seqs.len(), st.skipped), (100, 0), "a long GOP alone never makes a viewer skip");
    // Now the viewer stalls for 3 s while a new keyframe arrives.
    for s in 100..175u64 {
        l.push(frame(s, s == 150, 10), s * 40_000).unwrap();
    }
    let (seqs, st) = read_all(&l, &mut c);
    assert_eq!(seqs.first(), Some(&150), "more than 2 s behind: jumps to the newer keyframe");
    assert_eq!(st.skipped, 50);
}

#[test]
fn a_new_epoch_resumes_at_a_keyframe_with_increasing_timestamps() {
    let l = log(100, 1 << 20, 1 << 20);
    l.begin_epoch();
    for s in 0..10u64 {
        assert_eq!(l.push(frame(s, s == 0, 10), 0).unwrap(), Pushed::Appended { sync_point: s == 0 });
    }
    // The edge restarted: its clock starts again at 0, and its first frames are not keyframes.
    l.begin_epoch();
    assert_eq!(l.push(frame(0, false, 10), 0).unwrap(), Pushed::AwaitingSyncPoint);
    assert_eq!(l.push(frame(1, true, 10), 0).unwrap(), Pushed::Appended { sync_point: true });
    l.push(frame(2, false, 10), 0).unwrap();
    let mut c = l.subscribe();
    let mut out = Vec::new();
    l.read(&mut c, usize::MAX, &mut out);
    let pts: Vec<i64> = out.iter().map(|e| e.frame.pts).collect();
    assert_eq!(pts, [9 * 3600 + 3600, 9 * 3600 + 7200], "continues one frame interval after the last");
    assert!(out[0].frame.flags.is_discontinuity(), "the first frame after the break says so");
    assert!(!out[1].frame.flags.is_discontinuity());

    // A source that kept running continues with its own timestamps.
    l.begin_epoch();
    l.push(frame(50, true, 10), 0).unwrap();
    let mut c = l.subscribe();
    let mut out = Vec::new();
    l.read(&mut c, usize::MAX, &mut out);
    assert_eq!(out[0].frame.pts, 50 * 3600 + 9 * 3600, "the offset chosen at the restart stays");
}

/// A frame of a 25 fps source whose clock started `clock_start` frames ago, captured at
/// `capture_us` (the edge's clock).
fn stamped(seq: u64, key: bool, capture_us: u64) -> Frame {
    Frame { capture_us, ..frame(seq, key, 10) }
}

fn timeline_log(mode: OutageTimeline) -> FrameLog {
    let l = FrameLog::new(LogConfig {
        max_frames: 1000,
        max_bytes: 1 << 20,
        viewer_max_lag_bytes: 1 << 20,
        viewer_max_lag_us: u64::MAX,
        timeline: mode,
    });
    l.set_header(StreamHeader { tracks: vec![TrackInfo::h264(0, Bytes::from_static(SPS), Bytes::from_static(PPS))] })
        .unwrap();
    l
}

/// Pushes 2 s of frames (epoch 1), a 3 s outage, then an edge whose clock restarted at 0
/// (epoch 2); the pts of epoch 2's first frame.
fn pts_after_outage(mode: OutageTimeline, capture: impl Fn(u64) -> u64) -> (i64, i64) {
    let l = timeline_log(mode);
    const T0: u64 = 1_700_000_000_000_000;
    for s in 0..50u64 {
        l.push(stamped(s, s % 25 == 0, capture(T0 + s * 40_000)), T0 + s * 40_000 + 5_000).unwrap();
    }
    l.begin_epoch();
    let back = T0 + 49 * 40_000 + 3_000_000;
    l.push(stamped(0, true, capture(back)), back + 5_000).unwrap();
    let mut c = l.subscribe();
    let mut out = Vec::new();
    l.read(&mut c, usize::MAX, &mut out);
    (out[0].frame.pts, 49 * 3600)
}

#[test]
fn an_outage_advances_the_timeline_by_its_real_length_unless_squeezed() {
    let (pts, last) = pts_after_outage(OutageTimeline::WallClock, |t| t);
    assert_eq!(pts - last, 3 * 90_000, "3 s later on the 90 kHz clock");
    let (pts, last) = pts_after_outage(OutageTimeline::Squeezed, |t| t);
    assert_eq!(pts - last, 3600, "one frame interval later");
    // No capture times from the edge: the hub's receive times measure the gap.
    let (pts, last) = pts_after_outage(OutageTimeline::WallClock, |_| 0);
    assert_eq!(pts - last, 3 * 90_000);
    // An edge clock that jumped an hour is not believed.
    let (pts, last) =
        pts_after_outage(OutageTimeline::WallClock, |t| if t > 1_700_000_002_000_000 { t + 3_600_000_000 } else { t });
    assert_eq!(pts - last, 3 * 90_000);
}

#[test]
fn a_source_whose_clock_kept_running_keeps_its_own_timestamps() {
    // The tunnel broke for 3 s but the source ran on: its first frame after the break has the
    // timestamp it was captured with, a few milliseconds off the capture clock's gap.
    let l = timeline_log(OutageTimeline::WallClock);
    const T0: u64 = 1_700_000_000_000_000;
    for s in 0..50u64 {
        l.push(stamped(s, s % 25 == 0, T0 + s * 40_000), T0 + s * 40_000).unwrap();
    }
    l.begin_epoch();
    l.push(stamped(125, true, T0 + 125 * 40_000 + 7_000), T0 + 125 * 40_000 + 50_000).unwrap();
    let mut c = l.subscribe();
    let mut out = Vec::new();
    l.read(&mut c, usize::MAX, &mut out);
    assert_eq!(out[0].frame.pts, 125 * 3600, "not shifted");
}

#[test]
fn a_repeated_header_changes_nothing() {
    let l = log(100, 1 << 20, 1 << 20);
    let before = l.header().unwrap();
    l.set_header(before.header.clone()).unwrap();
    assert!(Arc::ptr_eq(&before, &l.header().unwrap()), "viewers see no new header event");
}

#[test]
fn frames_older_than_a_viewer_may_lag_are_evicted_but_the_newest_gop_stays() {
    let l = log_with_lag_us(2_000_000);
    // 25 fps with a keyframe every second, for 10 s: the frame bound alone would keep all 250.
    for s in 0..250u64 {
        l.push(frame(s, s % 25 == 0, 10), s * 40_000).unwrap();
    }
    // The newest frame came at 9.96 s: frame 199 (7.96 s) is the oldest within 2 s of it.
    let stats = l.stats();
    assert_eq!(stats.head - stats.frames as u64, 199, "{stats:?}");

    // One group of pictures 5 s long: nothing from its keyframe on goes, however old.
    let l = log_with_lag_us(2_000_000);
    for s in 0..125u64 {
        l.push(frame(s, s == 0, 10), s * 40_000).unwrap();
    }
    assert_eq!(l.stats().frames, 125, "the newest keyframe's group is never evicted by age");
    let mut c = l.subscribe();
    assert_eq!(read_all(&l, &mut c).0.len(), 125);
}

/// A format that records what it was fed: its item is the frame's sequence number.
#[derive(Debug, Default)]
struct Seqs {
    fed: Vec<u64>,
}

impl FrameFormat for Seqs {
    type Out = u64;

    fn package(&mut self, e: &LogEntry) -> u64 {
        self.fed.push(e.frame.seq);
        e.frame.seq
    }
}

fn fed(l: &FrameLog, a: &Attached<PerFrame<Seqs>>) -> Vec<u64> {
    l.with_packager(a, |p| p.format.fed.clone()).unwrap()
}

#[test]
fn a_packager_is_fed_each_frame_once_in_order_while_attached() {
    let l = Arc::new(log(100, 1 << 20, 1 << 20));
    fill(&l, 0, 3, 10, 10);
    assert!(l.attached().is_empty(), "nothing is packaged for a format without viewers");
    let a = l.attach(|| PerFrame::new(Seqs::default()));
    assert_eq!(fed(&l, &a), vec![0, 1, 2], "a new packager starts at the newest keyframe");
    let b = l.attach(|| -> PerFrame<Seqs> { unreachable!("one packager per format") });
    let c = b.clone();
    fill(&l, 3, 3, 10, 10);
    assert_eq!(fed(&l, &a), vec![0, 1, 2, 3, 4, 5], "once per frame, whatever the handles");
    drop((a, b));
    assert_eq!(l.attached().len(), 1, "attached while a handle is left");
    drop(c);
    assert!(l.attached().is_empty(), "the last handle detaches it");

    // Attached again later: a fresh packager, from the newest keyframe.
    fill(&l, 6, 6, 10, 10);
    let a = l.attach(|| PerFrame::new(Seqs::default()));
    assert_eq!(fed(&l, &a), vec![10, 11]);
}

#[test]
fn packaged_reads_follow_the_logs_overflow_policy_and_eviction() {
    let l = Arc::new(log(10, 1 << 20, 250));
    let a = l.attach(|| PerFrame::new(Seqs::default()));
    let mut c = l.subscribe();
    fill(&l, 0, 8, 5, 10);
    let mut out = Vec::new();
    let st = l.read_packaged(&a, &mut c, usize::MAX, &mut out);
    assert_eq!(out.iter().map(|p| p.out).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert!(out.iter().all(|p| p.out == p.entry.frame.seq), "each item with its frame");
    assert_eq!(st.skipped, 0);

    // 30 frames of 10 bytes: the cursor is 300 bytes behind (more than 250), and the log kept
    // only the last 10: it jumps to the newest keyframe (35).
    fill(&l, 8, 30, 5, 10);
    out.clear();
    let st = l.read_packaged(&a, &mut c, usize::MAX, &mut out);
    assert_eq!(out.first().map(|p| p.out), Some(35));
    assert_eq!(st.skipped, 35 - 8);
    let held = l.with_packager(&a, |p| p.first()).unwrap();
    assert_eq!(held, Some(l.stats().head - l.stats().frames as u64), "items are evicted with their frames");
}

#[test]
fn a_cursor_from_before_a_packager_was_attached_starts_at_its_first_keyframe() {
    let l = Arc::new(log(100, 1 << 20, 1 << 20));
    fill(&l, 0, 12, 5, 10);
    // Subscribed at keyframe 10; a packager attached after keyframe 15 holds frames from 15.
    let mut c = l.subscribe();
    fill(&l, 12, 5, 5, 10);
    let a = l.attach(|| PerFrame::new(Seqs::default()));
    let mut out = Vec::new();
    l.read_packaged(&a, &mut c, usize::MAX, &mut out);
    assert_eq!(out.first().map(|p| p.out), Some(15), "never a frame the packager did not see");
}
