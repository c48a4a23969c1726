//! Watching what viewers receive over a period: frames with their arrival time and age, RTP
//! continuity, and the hub's `/metrics`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ViewerClient, ViewerItem};

use crate::rtsp_player::{RtspEvent, RtspPlayer};

/// One frame a WebSocket viewer received.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// When it arrived.
    pub at: Instant,
    /// A keyframe.
    pub keyframe: bool,
    /// Its presentation timestamp.
    pub pts: i64,
    /// The test-pattern counter (0 if it has none).
    pub counter: u64,
    /// Capture-to-arrival age, milliseconds.
    pub age_ms: u64,
}

/// What a viewer saw over a period.
#[derive(Debug, Default)]
pub struct Seen {
    /// The frames, in arrival order.
    pub frames: Vec<Observed>,
    /// Why the viewer was ended, if it was.
    pub ended: Option<String>,
}

impl Seen {
    /// When the first keyframe after `t` arrived.
    pub fn first_keyframe_after(&self, t: Instant) -> Option<Instant> {
        self.frames.iter().find(|f| f.at > t && f.keyframe).map(|f| f.at)
    }

    /// Arrival times of keyframes.
    pub fn keyframe_times(&self) -> Vec<Instant> {
        self.frames.iter().filter(|f| f.keyframe).map(|f| f.at).collect()
    }

    /// Ages (ms) of the frames that arrived after `t`.
    pub fn ages_after(&self, t: Instant) -> Vec<u64> {
        self.frames.iter().filter(|f| f.at > t).map(|f| f.age_ms).collect()
    }

    /// Frames per second between `from` and `to`.
    pub fn fps(&self, from: Instant, to: Instant) -> f64 {
        let n = self.frames.iter().filter(|f| f.at > from && f.at <= to).count();
        n as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-3)
    }

    /// Panics unless timestamps and test-pattern counters strictly increase.
    pub fn assert_increasing(&self) {
        for w in self.frames.windows(2) {
            assert!(w[1].pts > w[0].pts, "pts went from {} to {}", w[0].pts, w[1].pts);
            assert!(w[1].counter > w[0].counter, "counter went from {} to {}", w[0].counter, w[1].counter);
        }
    }
}

/// Reads frames until `until` (or until the viewer is ended).
pub async fn watch(v: &mut ViewerClient, until: Instant) -> Seen {
    let mut seen = Seen::default();
    while Instant::now() < until {
        match tokio::time::timeout_at(until.into(), v.next()).await {
            Err(_) => break,
            Ok(Ok(Some(ViewerItem::Frame(f)))) => {
                let counter = mediamesh_media::h264::sei::read_stamp(&f.payload).map_or(0, |s| s.counter);
                let age_ms = crate::unix_micros().saturating_sub(f.capture_us) / 1000;
                seen.frames.push(Observed {
                    at: Instant::now(),
                    keyframe: f.flags.is_keyframe(),
                    pts: f.pts,
                    counter,
                    age_ms,
                });
            }
            Ok(Ok(Some(ViewerItem::End(r)))) => {
                seen.ended = Some(r);
                break;
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                seen.ended = Some("closed".into());
                break;
            }
            Ok(Err(e)) => {
                seen.ended = Some(e.to_string());
                break;
            }
        }
    }
    seen
}

/// Checks RTP from `player` until `until`: sequence numbers continue by one and timestamps
/// never go back (panics otherwise, or if the session ends); returns keyframe arrival times.
pub async fn watch_rtp(player: &mut RtspPlayer, until: Instant) -> Vec<Instant> {
    let mut keyframes = Vec::new();
    let mut last: Option<(u16, u32)> = None;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match player.next(left).await {
            None => break,
            Some(RtspEvent::Rtp(p)) => {
                if let Some((seq, ts)) = last {
                    assert_eq!(p.seq, seq.wrapping_add(1), "RTP sequence numbers continue");
                    assert!((p.timestamp.wrapping_sub(ts) as i32) >= 0, "RTP time went back: {ts} -> {}", p.timestamp);
                }
                last = Some((p.seq, p.timestamp));
                if p.starts_keyframe {
                    keyframes.push(Instant::now());
                }
            }
            Some(e) => panic!("the RTSP viewer was ended: {e:?}"),
        }
    }
    keyframes
}

/// The value at quantile `p` (0–1) of `v` (sorted in place).
pub fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A parsed `/metrics` page.
#[derive(Debug)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    /// The value of one series, written as on the page (`name{label="v"}`).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
    }
}

/// Fetches `/metrics` from `addr`, checking every line is valid text exposition format.
pub async fn metrics(addr: SocketAddr) -> Metrics {
    metrics_with(addr, &[]).await
}

/// [`metrics`] with request headers (credentials on a hub with an `auth` block).
pub async fn metrics_with(addr: SocketAddr, headers: &[(&str, &str)]) -> Metrics {
    let answer = crate::http::request(addr, "GET", "/metrics", headers).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    parse_metrics(&answer.body)
}

/// Parses a `/metrics` page, checking every line is valid text exposition format.
pub fn parse_metrics(body: &str) -> Metrics {
    let mut samples = Vec::new();
    for line in body.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        samples.push((series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"))));
    }
    Metrics(samples)
}

/// Connects a viewer to `url`, retrying (the node may not be connected yet) until `deadline`.
pub async fn connect_viewer(url: &str, deadline: Instant) -> ViewerClient {
    loop {
        if let Ok(v) = ViewerClient::connect(url, &mediamesh_hub::client::ConnectOptions::default()).await {
            return v;
        }
        assert!(Instant::now() < deadline, "could not connect a viewer to {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
