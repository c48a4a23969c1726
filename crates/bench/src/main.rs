//! `mediamesh-bench`: fan-out cost, measured.
//!
//! A binary of its own, beside the product's: it starts the `mediamesh` binary it finds next to
//! itself (or the one `--mediamesh` names) as a hub and an edge, so one bench build can measure
//! two builds of the hub against each other.
//!
//! Every run starts its server fresh as separate processes (mediamesh: a hub and an edge looping
//! a pre-encoded clip; or a peer: nginx-rtmp, GStreamer's RTSP server), connects viewers from
//! this process, and measures, over a window after a warm-up:
//!
//! - the server's CPU seconds (utime + stime from `/proc`) per delivered Gbit of video, and its
//!   share of one core;
//! - its memory (RSS) and the RSS each viewer adds (measured against the server with one viewer
//!   per stream, before the others connect);
//! - delivered frames and bytes, frames missed (a jump in the frame counter), viewers lost;
//! - latency from capture (the stamp the edge or feeder writes as the frame goes out) to
//!   receipt at the viewer, p50 / p99 / max.
//!
//! The results print as a table and can be written as JSON (`scripts/bench` plots them).

#![forbid(unsafe_code)]

mod glass;
mod hls;
mod idle_edges;
mod profile;
mod report;
mod servers;
mod stamped;
mod viewers;
mod webrtc_viewers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser};
use serde::Serialize;
use servers::{Protocol, Running, Server};
use viewers::{Phase, Tally};

/// Measure fan-out: hub CPU per delivered Gbit, memory per viewer, latency; optionally beside
/// nginx-rtmp and GStreamer's RTSP server (see docs/benchmarks.md).
/// A browser for `--glass`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BrowserName {
    Chromium,
    Firefox,
}

impl BrowserName {
    fn kind(self) -> mediamesh_testkit::browser::Kind {
        match self {
            BrowserName::Chromium => mediamesh_testkit::browser::Kind::Chromium,
            BrowserName::Firefox => mediamesh_testkit::browser::Kind::Firefox,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "mediamesh-bench", version)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> std::process::ExitCode {
    let args = Cli::parse().args;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The `mediamesh` binary to run as hub and edge; default: the one beside this binary
    /// (`cargo build --release` puts both in target/release).
    #[arg(long, value_name = "PATH")]
    mediamesh: Option<PathBuf>,
    /// Viewer counts of the ladder (one stream).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    viewers: Vec<usize>,
    /// Viewer protocols for mediamesh's ladder.
    #[arg(long, value_delimiter = ',', default_value = "ws,rtsp-tcp")]
    protocols: Vec<Protocol>,
    /// Streams x viewers-per-stream mixes (mediamesh, WebSocket), e.g. 100x10.
    #[arg(long, value_delimiter = ',', default_value = "100x10")]
    mix: Vec<String>,
    /// Also measure nginx-rtmp and GStreamer's RTSP server, and every server with identical
    /// `ffmpeg -c copy` readers at these counts.
    #[arg(long)]
    peers: bool,
    /// Also measure Janus's streaming plugin with the same WebRTC viewers at the ladder's
    /// counts (Debian's `janus`, fed the clip over RTP); `--peers` does too when `--protocols`
    /// has `webrtc`.
    #[arg(long)]
    janus: bool,
    /// Viewer counts for the `ffmpeg` reader comparison (with --peers).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    ffmpeg_viewers: Vec<usize>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds between the last viewer's first frame and the measurement.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Where the clip and each run's files go; default $XDG_STATE_HOME/mediamesh/bench.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure a hub that is already running instead of starting one: HOST or HOST:PORT, PORT
    /// being its stream port (plain HTTP, for WebSocket viewers). Only the ladder runs; the
    /// streams must carry the test pattern's stamp for latency.
    #[arg(long, value_name = "HOST[:PORT]")]
    target: Option<String>,
    /// The running hub's RTSP port (with --target).
    #[arg(long, default_value_t = 8554)]
    target_rtsp_port: u16,
    /// The streams to watch on the running hub, NODE/STREAM (with --target).
    #[arg(long, value_delimiter = ',', default_value = "demo-edge/cam1")]
    target_streams: Vec<String>,
    /// The running hub's process id, for its CPU and memory (with --target, on this machine).
    #[arg(long)]
    target_pid: Option<u32>,
    /// Measure glass-to-glass latency in headless Chromium instead of the ladder, for these
    /// page protocols (`mse`, `hls`): `mediamesh demo`, its page, `--duration` seconds of cam1's
    /// frames on screen each (docs/benchmarks.md, "Glass to glass").
    #[arg(long, value_delimiter = ',')]
    glass: Vec<String>,
    /// The browsers of `--glass`: `chromium`, `firefox` (Firefox ESR over Marionette).
    #[arg(long, value_delimiter = ',', default_value = "chromium")]
    browsers: Vec<BrowserName>,
    /// Measure LL-HLS serving instead of the ladder: this many clients of one stream doing
    /// blocking playlist reloads and fetching each part, `--duration` seconds
    /// (docs/benchmarks.md, "LL-HLS serving").
    #[arg(long)]
    hls_clients: Option<usize>,
    /// Measure this many idle edges on one hub instead of the ladder: the hub's memory per
    /// edge, its CPU with all of them idle over `--duration` seconds, and the time for all to
    /// reconnect after `kill -9` and a restart of the hub (docs/benchmarks.md, "Idle edges").
    #[arg(long)]
    idle_edges: Option<usize>,
    /// Sample the server with `perf record` during each measured window; the self-time profile
    /// goes to the run's folder (`perf.txt`) and its summary into the results. Sampling costs
    /// the server some CPU: use it to explain figures, not to produce them.
    #[arg(long)]
    perf: bool,
}

/// One run's setup.
#[derive(Debug, Clone, Serialize)]
struct Spec {
    server: Server,
    protocol: Protocol,
    /// `builtin` or `ffmpeg`.
    client: &'static str,
    streams: usize,
    /// Viewers in all.
    viewers: usize,
}

/// One run's results.
#[derive(Debug, Serialize)]
struct Outcome {
    #[serde(flatten)]
    spec: Spec,
    duration_s: f64,
    cpu_percent: f64,
    cpu_s_per_gbit: Option<f64>,
    edge_cpu_percent: Option<f64>,
    /// CPU of the builtin viewers (this process), for how much of the machine they take from
    /// the server; `None` for ffmpeg readers.
    viewers_cpu_percent: Option<f64>,
    rss_mib: f64,
    rss_per_viewer_kib: Option<f64>,
    delivered_mbit_s: f64,
    frames: u64,
    frames_expected: u64,
    frames_missed: u64,
    viewers_started: usize,
    viewers_lost: usize,
    /// Capture → the viewer's task has the frame.
    latency_ms: Latency,
    /// Capture → the frame's last byte is in the viewer's socket (the kernel's receive
    /// timestamp): the server's added latency without the bench viewers' own CPU wait.
    socket_latency_ms: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<profile::Summary>,
    error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    samples: usize,
}

impl Latency {
    /// Percentiles of microsecond samples, in milliseconds.
    fn of(us: &mut [u32]) -> Self {
        us.sort_unstable();
        let pct = |q: f64| us.get(((us.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |&v| f64::from(v) / 1e3);
        Self { p50: pct(0.5), p99: pct(0.99), max: pct(1.0), samples: us.len() }
    }
}

fn plan(args: &BenchArgs) -> anyhow::Result<Vec<Spec>> {
    let spec = |server, protocol, client, streams, viewers| Spec { server, protocol, client, streams, viewers };
    let mut specs = Vec::new();
    for &p in &args.protocols {
        if p == Protocol::Rtmp {
            anyhow::bail!("mediamesh does not serve RTMP; --protocols takes ws, rtsp-tcp, rtsp-udp and webrtc");
        }
        for &n in &args.viewers {
            specs.push(spec(Server::Mediamesh, p, "builtin", 1, n));
        }
    }
    if args.janus || (args.peers && args.protocols.contains(&Protocol::Webrtc)) {
        for &n in &args.viewers {
            specs.push(spec(Server::Janus, Protocol::Webrtc, "builtin", 1, n));
        }
    }
    if args.peers {
        for &n in &args.viewers {
            specs.push(spec(Server::Gstreamer, Protocol::RtspTcp, "builtin", 1, n));
        }
        for &n in &args.ffmpeg_viewers {
            specs.push(spec(Server::Mediamesh, Protocol::RtspTcp, "ffmpeg", 1, n));
            specs.push(spec(Server::NginxRtmp, Protocol::Rtmp, "ffmpeg", 1, n));
            specs.push(spec(Server::Gstreamer, Protocol::RtspTcp, "ffmpeg", 1, n));
        }
    }
    if args.target.is_some() {
        anyhow::ensure!(!args.peers, "--peers starts its own servers; it does not go with --target");
        return Ok(specs);
    }
    for m in args.mix.iter().filter(|m| !m.is_empty()) {
        let (s, v) = m.split_once('x').with_context(|| format!("--mix {m}: expected STREAMSxVIEWERS"))?;
        let (s, v): (usize, usize) = (s.parse()?, v.parse()?);
        specs.push(spec(Server::Mediamesh, Protocol::Ws, "builtin", s, s * v));
    }
    Ok(specs)
}

/// The `mediamesh` binary the runs start.
fn mediamesh_binary(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let path = match &args.mediamesh {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("mediamesh"),
    };
    anyhow::ensure!(
        path.is_file(),
        "no mediamesh binary at {}: build it (`cargo build --release`) or name one with --mediamesh",
        path.display()
    );
    Ok(path)
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; measure with `cargo build --release` and target/release/mediamesh-bench"
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| mediamesh_config::state_dir("bench"));
    if !args.glass.is_empty() {
        let binary = mediamesh_binary(&args)?;
        std::fs::create_dir_all(&dir)?;
        let (protocols, seconds, warmup) = (args.glass.clone(), args.duration, args.warmup);
        let browsers: Vec<_> = args.browsers.iter().map(|b| b.kind()).collect();
        let results =
            tokio::task::spawn_blocking(move || glass::measure(&binary, &dir, &browsers, &protocols, seconds, warmup))
                .await??;
        glass::print(&results);
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&serde_json::json!({ "glass": results }))?)?;
        }
        return Ok(());
    }
    if let Some(edges) = args.idle_edges {
        let binary = mediamesh_binary(&args)?;
        let r = idle_edges::measure(&binary, &dir.join("idle-edges"), edges, args.duration, args.perf).await?;
        idle_edges::print(&r);
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&serde_json::json!({ "idleEdges": r }))?)?;
        }
        return Ok(());
    }
    if let Some(clients) = args.hls_clients {
        let binary = mediamesh_binary(&args)?;
        let clip = servers::ensure_clip(&dir)?;
        let run_dir = dir.join("hls");
        std::fs::create_dir_all(&run_dir)?;
        let o = hls::measure(&binary, &run_dir, &clip, clients, args.duration).await?;
        println!(
            "{:>8} {:>9} {:>12} {:>8} {:>9} {:>9} {:>9} {:>7}",
            "clients", "hub CPU %", "KiB/client", "parts", "p50 ms", "p99 ms", "max ms", "errors"
        );
        println!(
            "{:>8} {:>9.1} {:>12.1} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            o.clients, o.hub_cpu_percent, o.rss_kib_per_client, o.parts, o.p50_ms, o.p99_ms, o.max_ms, o.errors
        );
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&serde_json::json!({ "hls": o }))?)?;
        }
        return Ok(());
    }
    let clip = match args.target {
        Some(_) => PathBuf::new(),
        None => servers::ensure_clip(&dir)?,
    };
    let specs = plan(&args)?;
    let mut outcomes = Vec::new();
    report::print_head();
    for (i, spec) in specs.into_iter().enumerate() {
        let run_dir = dir.join(format!("run-{i:02}"));
        std::fs::create_dir_all(&run_dir)?;
        let outcome = match measure(&spec, &run_dir, &clip, &args).await {
            Ok(o) => o,
            Err(e) => failed(spec, format!("{e:#}")),
        };
        report::print_row(&outcome);
        outcomes.push(outcome);
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "title": format!("mediamesh bench, {} s per run, {} CPUs", args.duration, num_cpus()),
            "duration_s": args.duration,
            "runs": outcomes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn failed(spec: Spec, error: String) -> Outcome {
    Outcome {
        spec,
        duration_s: 0.0,
        cpu_percent: 0.0,
        cpu_s_per_gbit: None,
        edge_cpu_percent: None,
        viewers_cpu_percent: None,
        rss_mib: 0.0,
        rss_per_viewer_kib: None,
        delivered_mbit_s: 0.0,
        frames: 0,
        frames_expected: 0,
        frames_missed: 0,
        viewers_started: 0,
        viewers_lost: 0,
        latency_ms: Latency::default(),
        socket_latency_ms: None,
        profile: None,
        error: Some(error),
    }
}

async fn start(
    spec: &Spec,
    dir: &std::path::Path,
    clip: &std::path::Path,
    args: &BenchArgs,
) -> anyhow::Result<Running> {
    match spec.server {
        Server::Mediamesh => servers::start_mediamesh(&mediamesh_binary(args)?, dir, clip, spec.streams).await,
        Server::NginxRtmp => servers::start_nginx(dir, clip).await,
        Server::Gstreamer => servers::start_gstreamer(dir, clip).await,
        Server::Janus => servers::start_janus(dir, clip).await,
    }
}

async fn wait_started(phase: &Phase, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let started = phase.started.load(std::sync::atomic::Ordering::Relaxed);
        if started >= n || Instant::now() > deadline {
            return started;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measure(
    spec: &Spec,
    dir: &std::path::Path,
    clip: &std::path::Path,
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let server = match &args.target {
        Some(t) => {
            let (host, port) = match t.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().with_context(|| format!("--target {t}: bad port"))?),
                None => (t.as_str(), 10005),
            };
            servers::target(host, port, args.target_rtsp_port, args.target_streams.clone(), args.target_pid)
        }
        None => start(spec, dir, clip, args).await?,
    };
    let result = measure_running(spec, &server, args, dir).await;
    server.stop().await;
    result
}

async fn measure_running(
    spec: &Spec,
    server: &Running,
    args: &BenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let phase = Arc::new(Phase::default());
    let ffmpeg = spec.client == "ffmpeg";
    let mut viewers = Vec::with_capacity(spec.viewers);
    // One viewer per stream first: the stream runs, and its memory is the baseline.
    for s in 0..spec.streams {
        let client = server.client(spec.protocol, s, ffmpeg)?;
        viewers.push(client.spawn(phase.clone()));
    }
    let first = wait_started(&phase, spec.streams, Duration::from_secs(30)).await;
    if first < spec.streams {
        phase.finish();
        let mut why = String::new();
        for v in viewers {
            if let Some(e) = v.stop().await.error {
                why = format!(": {e}");
                break;
            }
        }
        anyhow::bail!("only {first} of {} streams started within 30 s{why}", spec.streams);
    }
    // The hub's frame log fills up to its cap (128 frames in the bench, 5.1 s) after a stream
    // starts: the baseline is taken once it is full, so that growth does not count as viewers'.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let base = report::ProcSample::take(&server.pids);
    for i in spec.streams..spec.viewers {
        let client = server.client(spec.protocol, i % spec.streams, ffmpeg)?;
        viewers.push(client.spawn(phase.clone()));
        if ffmpeg && i % 10 == 9 {
            // Starting a hundred ffmpeg processes at once starves everything for seconds.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let started = wait_started(&phase, spec.viewers, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let edge = server.edge_pid.map(|p| report::ProcSample::take(&[p]));
    let t0 = report::ProcSample::take(&server.pids);
    let me = [std::process::id()];
    let v0 = report::ProcSample::take(&me);
    let at = Instant::now();
    phase.measure();
    let recording = args.perf.then(|| profile::start(&server.pids, dir, args.duration)).transpose()?;
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    phase.finish();
    let elapsed = at.elapsed().as_secs_f64();
    let t1 = report::ProcSample::take(&server.pids);
    let v1 = report::ProcSample::take(&me);
    let profile = match recording {
        Some(r) => Some(r.finish().await?),
        None => None,
    };
    let edge_cpu = edge.zip(server.edge_pid.map(|p| report::ProcSample::take(&[p])));

    let mut tallies: Vec<Tally> = Vec::with_capacity(viewers.len());
    for v in viewers {
        tallies.push(v.stop().await);
    }
    let bytes: u64 = tallies.iter().map(|t| t.bytes).sum();
    let frames: u64 = tallies.iter().map(|t| t.frames).sum();
    let missed: u64 = tallies.iter().map(|t| t.missed).sum();
    let lost = tallies.iter().filter(|t| t.error.is_some()).count();
    let first_error = tallies.iter().find_map(|t| t.error.clone());
    let mut sock: Vec<u32> = tallies.iter().flat_map(|t| t.socket_latency_us.iter().copied()).collect();
    let mut lat: Vec<u32> = tallies.into_iter().flat_map(|t| t.latency_us).collect();
    let socket_latency_ms = (!sock.is_empty()).then(|| Latency::of(&mut sock));

    let cpu_s = t1.cpu_s - t0.cpu_s;
    let gbit = bytes as f64 * 8.0 / 1e9;
    let extra = spec.viewers.saturating_sub(spec.streams);
    Ok(Outcome {
        spec: spec.clone(),
        duration_s: elapsed,
        cpu_percent: 100.0 * cpu_s / elapsed,
        cpu_s_per_gbit: (gbit > 0.0 && !server.pids.is_empty()).then(|| cpu_s / gbit),
        edge_cpu_percent: edge_cpu.map(|(a, b)| 100.0 * (b.cpu_s - a.cpu_s) / elapsed),
        viewers_cpu_percent: (!ffmpeg).then(|| 100.0 * (v1.cpu_s - v0.cpu_s) / elapsed),
        rss_mib: t1.rss_kib as f64 / 1024.0,
        rss_per_viewer_kib: (extra > 0 && !server.pids.is_empty())
            .then(|| (t1.rss_kib as f64 - base.rss_kib as f64) / extra as f64),
        delivered_mbit_s: bytes as f64 * 8.0 / 1e6 / elapsed,
        frames,
        frames_expected: (spec.viewers as f64 * elapsed * 25.0).round() as u64,
        frames_missed: missed,
        viewers_started: started,
        viewers_lost: lost,
        latency_ms: Latency::of(&mut lat),
        socket_latency_ms,
        profile,
        error: first_error.map(|e| format!("{lost} viewers failed, e.g.: {e}")),
    })
}
