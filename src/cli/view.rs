//! `mediamesh view`: a viewer for people and scripts, over the WebSocket format or WebRTC (WHEP).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_media::h264::sei::read_stamp;

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// The stream's WebSocket URL, e.g. wss://127.0.0.1:10005/api/v1/nodes/NODE/streams/STREAM/ws,
    /// or its WHEP URL (…/whep) to watch over WebRTC.
    url: String,
    /// Stop after this many video frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Write the received video (raw H.264 or H.265 Annex-B, playable by ffplay/ffprobe/VLC) to
    /// this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// CA certificate (PEM) to verify a wss:// hub; default: the system's CA bundle.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Give up when nothing arrives for this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Print only the summary, not a line per frame.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// A token for a hub that asks for one (sent as `Authorization: Bearer`).
    #[arg(long, env = "MEDIAMESH_TOKEN", hide_env_values = true)]
    token: Option<mediamesh_auth::Secret>,
}

#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    frames: u64,
    keyframes: u64,
    bytes: u64,
    connect_ms: f64,
    first_frame_ms: Option<f64>,
    first_is_keyframe: Option<bool>,
    duration_secs: f64,
    width: Option<u32>,
    height: Option<u32>,
    codec: Option<String>,
    audio_codec: Option<String>,
    audio_frames: u64,
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
    latency_ms_max: Option<f64>,
    skipped: u64,
    counter_frames: u64,
    counter_gaps: u64,
    counter_out_of_order: u64,
    pts_backwards: u64,
    end_reason: Option<String>,
    /// Times the hub restarted (close 1012) and the viewer connected again.
    reconnects: u64,
    /// WebRTC only: video frames with packets missing before them (not recovered in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    broken_frames: Option<u64>,
    /// WebRTC only: the video's packet loss over the last second the stack reported, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_percent: Option<f64>,
    /// WebRTC only: NACKs and keyframe requests (PLI) the client sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    nacks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plis: Option<u64>,
}

/// The WebSocket close code of a hub that is restarting.
const CLOSE_SERVICE_RESTART: u16 = 1012;

/// Connects again to `url`, retrying every half second for `timeout` at most (a draining hub
/// refuses until it is gone, a restarting one until it listens).
async fn reconnect(url: &str, options: &ConnectOptions, timeout: Duration) -> anyhow::Result<ViewerClient> {
    let deadline = Instant::now() + timeout;
    loop {
        match ViewerClient::connect(url, options).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to {url} again"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    let roots = match &args.ca {
        Some(p) => Some(mediamesh_tls::load_roots(p)?),
        None => None,
    };
    if args.url.split(['?', '#']).next().is_some_and(|path| path.ends_with("/whep")) {
        return run_whep(args, roots).await;
    }
    let started = Instant::now();
    let options = ConnectOptions { roots, recv_buffer: None, token: args.token.clone() };
    let mut client =
        ViewerClient::connect(&args.url, &options).await.with_context(|| format!("connecting to {}", args.url))?;
    let mut out = match &args.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut s = Summary { connect_ms: started.elapsed().as_secs_f64() * 1000.0, ..Summary::default() };
    let mut latencies: Vec<f64> = Vec::new();
    let (mut last_counter, mut last_pts): (Option<u64>, Option<i64>) = (None, None);
    let mut params: Vec<Vec<u8>> = Vec::new();
    let mut video_track: Option<u8> = None;
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    let interrupted = super::stop_signal();
    tokio::pin!(interrupted);
    loop {
        if args.frames.is_some_and(|n| s.frames >= n) {
            break;
        }
        let item = tokio::select! {
            r = tokio::time::timeout(timeout, client.next()) => r,
            () = &mut interrupted => break,
        };
        let item = match item {
            Err(_) => anyhow::bail!("nothing received for {:.1} s (after {} frames)", timeout.as_secs_f64(), s.frames),
            Ok(r) => r.context("receiving")?,
        };
        match item {
            None => {
                s.end_reason.get_or_insert_with(|| "connection closed".into());
                break;
            }
            Some(ViewerItem::Header(tracks)) => {
                if let Some(a) = tracks.iter().find(|t| t.kind == "audio") {
                    s.audio_codec = Some(a.codec_string.clone().unwrap_or_else(|| a.codec.clone()));
                    if !args.quiet && !args.json {
                        println!(
                            "header: audio {} {} Hz, {} channel(s)",
                            a.codec,
                            a.sample_rate.unwrap_or(a.clock_rate),
                            a.channels.unwrap_or(0)
                        );
                    }
                }
                if let Some(v) = tracks.iter().find(|t| t.kind == "video") {
                    video_track = Some(v.id);
                    s.width = v.width;
                    s.height = v.height;
                    s.codec = v.codec_string.clone();
                    params = v.parameter_set_bytes();
                    if !args.quiet && !args.json {
                        println!(
                            "header: {} {}x{} ({} parameter sets)",
                            v.codec_string.as_deref().unwrap_or(&v.codec),
                            v.width.unwrap_or(0),
                            v.height.unwrap_or(0),
                            params.len()
                        );
                    }
                }
            }
            Some(ViewerItem::Skip(n)) => {
                s.skipped += n;
                if !args.quiet && !args.json {
                    println!("skipped {n} frames (resynchronised at a keyframe)");
                }
            }
            Some(ViewerItem::End(reason)) => {
                // The close follows the end; 1012 says the hub is restarting (it drained):
                // connect again, through the same address, which a cluster serves elsewhere.
                let _ = tokio::time::timeout(Duration::from_secs(1), client.next()).await;
                if client.close_code() != Some(CLOSE_SERVICE_RESTART) {
                    s.end_reason = Some(reason);
                    break;
                }
                if !args.quiet && !args.json {
                    println!("the hub is restarting ({reason}); connecting again");
                }
                client = tokio::select! {
                    c = reconnect(&args.url, &options, timeout) => c?,
                    () = &mut interrupted => break,
                };
                s.reconnects += 1;
            }
            Some(ViewerItem::Frame(f)) if video_track.is_some_and(|v| v != f.track) => {
                s.audio_frames += 1;
            }
            Some(ViewerItem::Frame(f)) => {
                let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
                let latency_ms = now_us.saturating_sub(f.capture_us) as f64 / 1000.0;
                if s.frames == 0 {
                    s.first_frame_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                    s.first_is_keyframe = Some(f.flags.is_keyframe());
                }
                s.frames += 1;
                s.keyframes += u64::from(f.flags.is_keyframe());
                s.bytes += f.payload.len() as u64;
                latencies.push(latency_ms);
                if last_pts.is_some_and(|p| f.pts < p) {
                    s.pts_backwards += 1;
                }
                last_pts = Some(f.pts);
                if let Some(stamp) = read_stamp(&f.payload) {
                    s.counter_frames += 1;
                    match last_counter {
                        Some(c) if stamp.counter <= c => s.counter_out_of_order += 1,
                        Some(c) => s.counter_gaps += stamp.counter - c - 1,
                        None => {}
                    }
                    last_counter = Some(stamp.counter);
                }
                if let Some(w) = out.as_mut() {
                    if s.frames == 1 {
                        for p in &params {
                            w.write_all(&[0, 0, 0, 1])?;
                            w.write_all(p)?;
                        }
                    }
                    w.write_all(&f.payload)?;
                }
                if !args.quiet && !args.json {
                    println!(
                        "frame seq={} {} pts={} bytes={} latency={latency_ms:.1}ms",
                        f.seq,
                        if f.flags.is_keyframe() { "key" } else { "   " },
                        f.pts,
                        f.payload.len()
                    );
                }
            }
        }
    }
    s.duration_secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied();
    (s.latency_ms_p50, s.latency_ms_p99, s.latency_ms_max) = (pct(0.5), pct(0.99), latencies.last().copied());
    if let Some(mut w) = out {
        w.flush()?;
    }
    client.close().await;
    print_summary(&s, &args)?;
    if s.frames == 0 {
        anyhow::bail!("no frames received{}", s.end_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default());
    }
    Ok(())
}

/// WHEP mode: a str0m peer connection receives the stream over WebRTC.
async fn run_whep(args: ViewArgs, roots: Option<rustls::RootCertStore>) -> anyhow::Result<()> {
    use mediamesh_hub::client::whep::{WhepClient, WhepItem};

    let started = Instant::now();
    let opts = ConnectOptions { roots, recv_buffer: None, token: args.token.clone() };
    let mut client =
        WhepClient::connect(&args.url, &opts).await.with_context(|| format!("offering to {}", args.url))?;
    let mut s =
        Summary { connect_ms: started.elapsed().as_secs_f64() * 1000.0, broken_frames: Some(0), ..Summary::default() };
    let mut out = match &args.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut latencies: Vec<f64> = Vec::new();
    let mut last_counter: Option<u64> = None;
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    let interrupted = super::stop_signal();
    tokio::pin!(interrupted);
    loop {
        if args.frames.is_some_and(|n| s.frames >= n) {
            break;
        }
        let item = tokio::select! {
            r = tokio::time::timeout(timeout, client.next()) => r,
            () = &mut interrupted => break,
        };
        let item = match item {
            Err(_) => anyhow::bail!("nothing received for {:.1} s (after {} frames)", timeout.as_secs_f64(), s.frames),
            Ok(r) => r.context("receiving")?,
        };
        match item {
            None => {
                s.end_reason = Some("the peer connection ended".into());
                break;
            }
            Some(WhepItem::Audio(_)) => s.audio_frames += 1,
            Some(WhepItem::Stats(st)) => {
                s.loss_percent = st.loss.map(|l| f64::from(l) * 100.0);
                (s.nacks, s.plis) = (Some(st.nacks), Some(st.plis));
            }
            Some(WhepItem::Video(f)) => {
                let latency_ms = f
                    .capture
                    .and_then(|c| std::time::SystemTime::now().duration_since(c).ok())
                    .map(|d| d.as_secs_f64() * 1000.0);
                if s.frames == 0 {
                    s.first_frame_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                    s.first_is_keyframe = Some(f.keyframe);
                }
                s.frames += 1;
                s.keyframes += u64::from(f.keyframe);
                s.bytes += f.data.len() as u64;
                if !f.contiguous {
                    s.broken_frames = s.broken_frames.map(|n| n + 1);
                }
                latencies.extend(latency_ms);
                if f.keyframe && s.width.is_none() {
                    // An H.264 SPS (type 7) or an H.265 one (type 33).
                    let params = mediamesh_media::annexb::nals(&f.data).find_map(|n| match n.first() {
                        Some(h) if h & 0x1f == 7 => mediamesh_media::h264::parse_sps(n).ok(),
                        Some(h) if (h >> 1) & 0x3f == 33 => mediamesh_media::h265::parse_sps(n).ok(),
                        _ => None,
                    });
                    if let Some(p) = params {
                        (s.width, s.height, s.codec) = (Some(p.width), Some(p.height), Some(p.codec_string));
                    }
                }
                if let Some(stamp) = read_stamp(&f.data) {
                    s.counter_frames += 1;
                    match last_counter {
                        Some(c) if stamp.counter <= c => s.counter_out_of_order += 1,
                        Some(c) => s.counter_gaps += stamp.counter - c - 1,
                        None => {}
                    }
                    last_counter = Some(stamp.counter);
                }
                if let Some(w) = out.as_mut() {
                    w.write_all(&f.data)?;
                }
                if !args.quiet && !args.json {
                    let latency = latency_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1}ms"));
                    println!(
                        "frame {} rtp={} bytes={} latency={latency}{}",
                        if f.keyframe { "key" } else { "   " },
                        f.rtp_time,
                        f.data.len(),
                        if f.contiguous { "" } else { " (after lost packets)" }
                    );
                }
            }
        }
    }
    s.duration_secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied();
    (s.latency_ms_p50, s.latency_ms_p99, s.latency_ms_max) = (pct(0.5), pct(0.99), latencies.last().copied());
    if let Some(mut w) = out {
        w.flush()?;
    }
    client.close().await;
    print_summary(&s, &args)?;
    if s.frames == 0 {
        anyhow::bail!("no frames received{}", s.end_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default());
    }
    Ok(())
}

fn print_summary(s: &Summary, args: &ViewArgs) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(s)?);
        return Ok(());
    }
    let secs = s.duration_secs.max(1e-9);
    println!(
        "received {} frames ({} keyframes, {} bytes) in {:.2} s: {:.1} fps, {:.2} Mbit/s",
        s.frames,
        s.keyframes,
        s.bytes,
        s.duration_secs,
        s.frames as f64 / secs,
        s.bytes as f64 * 8.0 / secs / 1e6
    );
    if let Some(ms) = s.first_frame_ms {
        println!(
            "first frame {:.0} ms after starting to connect (connected after {:.0} ms; keyframe: {})",
            ms,
            s.connect_ms,
            s.first_is_keyframe.unwrap_or(false)
        );
    }
    if let (Some(p50), Some(p99), Some(max)) = (s.latency_ms_p50, s.latency_ms_p99, s.latency_ms_max) {
        println!("latency capture→viewer: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    }
    if s.counter_frames > 0 {
        println!(
            "test-pattern counter: {} frames, {} gaps, {} out of order",
            s.counter_frames, s.counter_gaps, s.counter_out_of_order
        );
    }
    if let Some(codec) = &s.audio_codec {
        println!("audio: {codec}, {} frames", s.audio_frames);
    }
    if s.skipped > 0 {
        println!("skipped {} frames to stay live", s.skipped);
    }
    if let (Some(broken), Some(nacks), Some(plis)) = (s.broken_frames, s.nacks, s.plis) {
        let loss = s.loss_percent.map_or_else(|| "–".to_owned(), |l| format!("{l:.1} %"));
        println!(
            "webrtc: loss {loss} in the last second, {nacks} NACKs, {plis} keyframe requests, {broken} frames after lost packets"
        );
    } else if let Some(broken) = s.broken_frames {
        println!("webrtc: {broken} frames after lost packets");
    }
    if s.reconnects > 0 {
        println!("connected again {} times (the hub restarted)", s.reconnects);
    }
    if let Some(r) = &s.end_reason {
        println!("stream ended: {r}");
    }
    if let Some(p) = &args.out {
        println!("wrote {}", p.display());
    }
    Ok(())
}
