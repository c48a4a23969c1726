//! The servers a bench run measures, each started fresh for every run as its own process:
//! mediamesh (a hub and an edge looping the clip), nginx-rtmp and GStreamer's RTSP server (both
//! fed the same clip, stamped live, by the bench itself).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mediamesh_edge::source::Clip;
use mediamesh_edge::source::testpattern_encoder::TestPatternEncoder;
use mediamesh_media::h264::sei::{TestPatternStamp, restamp};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

use crate::viewers::{Client, now_us};

/// The node name the bench's edge uses.
pub const NODE: &str = "bench";

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Server {
    Mediamesh,
    NginxRtmp,
    Gstreamer,
    /// Janus's streaming plugin, fed the clip over RTP by ffmpeg (WebRTC only).
    Janus,
}

/// How viewers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Protocol {
    Ws,
    RtspTcp,
    RtspUdp,
    Rtmp,
    /// WHEP: WebRTC viewers (str0m peer connections in this process).
    Webrtc,
}

/// Makes the clip on first use: 10 s of the test pattern, 1280x720, 25 fps, 2 Mbit/s, GOP 50.
pub fn ensure_clip(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("clip-1280x720-25fps-2000k.h264");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("encoding the bench clip (10 s of 1280x720 test pattern) into {}", path.display());
    let cfg = mediamesh_edge::config::TestPatternConfig {
        width: 1280,
        height: 720,
        fps: 25,
        bitrate_kbps: 2000,
        gop: 50,
        label: Some("mediamesh bench".into()),
    };
    let mut enc = TestPatternEncoder::new(&cfg, "bench")?;
    let mut data = Vec::new();
    for n in 0..250u64 {
        data.extend_from_slice(&enc.encode(n, n * 40_000, n == 0)?.data);
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A free TCP port on loopback (released at once; the server binds it next).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn yaml_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

/// A running server and what feeds it.
pub struct Running {
    pub server: Server,
    /// The processes whose CPU and memory count as the server's.
    pub pids: Vec<u32>,
    /// The edge, measured apart (mediamesh only).
    pub edge_pid: Option<u32>,
    children: Vec<Child>,
    feeder: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    host: String,
    stream_port: u16,
    rtsp_port: u16,
    rtmp_port: u16,
    /// `node/stream` for mediamesh streams other than the bench's own `bench/s{i}`.
    paths: Vec<String>,
}

/// A hub that is already running, at `host` (its stream port `stream_port`, plain HTTP, and its
/// RTSP port), serving `paths` (`node/stream`); `pid` if it runs on this machine.
pub fn target(host: &str, stream_port: u16, rtsp_port: u16, paths: Vec<String>, pid: Option<u32>) -> Running {
    Running {
        server: Server::Mediamesh,
        pids: pid.into_iter().collect(),
        edge_pid: None,
        children: Vec::new(),
        feeder: None,
        host: host.to_owned(),
        stream_port,
        rtsp_port,
        rtmp_port: 0,
        paths,
    }
}

impl Running {
    /// The stream port (plain HTTP).
    pub fn stream_port(&self) -> u16 {
        self.stream_port
    }

    /// The `node/stream` path of mediamesh stream `i`.
    fn path(&self, i: usize) -> String {
        self.paths.get(i).cloned().unwrap_or_else(|| format!("{NODE}/s{i}"))
    }

    /// The viewer client for stream `s` over `protocol` (`ffmpeg` readers if asked).
    pub fn client(&self, protocol: Protocol, stream: usize, ffmpeg: bool) -> anyhow::Result<Client> {
        let url = match (self.server, protocol) {
            (Server::Mediamesh, Protocol::Ws) => {
                if ffmpeg {
                    bail!("ffmpeg does not speak mediamesh's WebSocket format");
                }
                let path = self.path(stream);
                let (node, name) = path.split_once('/').context("a stream is NODE/STREAM")?;
                return Ok(Client::Ws {
                    addr: format!("{}:{}", self.host, self.stream_port),
                    path: format!("/api/v1/nodes/{node}/streams/{name}/ws"),
                });
            }
            (Server::Mediamesh, Protocol::Webrtc) => {
                if ffmpeg {
                    bail!("ffmpeg does not play WebRTC");
                }
                let path = self.path(stream);
                let (node, name) = path.split_once('/').context("a stream is NODE/STREAM")?;
                return Ok(Client::Whep {
                    url: format!("http://{}:{}/api/v1/nodes/{node}/streams/{name}/whep", self.host, self.stream_port),
                });
            }
            (Server::Mediamesh, Protocol::RtspTcp | Protocol::RtspUdp) => {
                format!("rtsp://{}:{}/{}", self.host, self.rtsp_port, self.path(stream))
            }
            (Server::Gstreamer, Protocol::RtspTcp | Protocol::RtspUdp) => {
                format!("rtsp://127.0.0.1:{}/s{stream}", self.rtsp_port)
            }
            (Server::Janus, Protocol::Webrtc) if !ffmpeg => {
                return Ok(Client::Janus { addr: format!("127.0.0.1:{}", self.stream_port), mountpoint: 1 });
            }
            (Server::NginxRtmp, Protocol::Rtmp) => format!("rtmp://127.0.0.1:{}/live/s{stream}", self.rtmp_port),
            (s, p) => bail!("{s:?} does not serve {p:?}"),
        };
        Ok(match protocol {
            _ if ffmpeg => Client::Ffmpeg { url },
            Protocol::RtspUdp => Client::RtspUdp { url },
            Protocol::RtspTcp => Client::RtspTcp { url },
            // Only ffmpeg reads RTMP here; WebSocket viewers were returned above.
            Protocol::Rtmp => Client::Ffmpeg { url },
            Protocol::Ws => bail!("{:?} does not serve WebSocket viewers", self.server),
            Protocol::Webrtc => bail!("{:?} does not serve WHEP viewers", self.server),
        })
    }

    /// Stops everything, by PID.
    pub async fn stop(mut self) {
        if let Some((cancel, task)) = self.feeder.take() {
            cancel.cancel();
            let _ = task.await;
        }
        for c in &mut self.children {
            if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
        }
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
    }
}

pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {:?}", cmd.as_std().get_program()))
}

async fn wait_for(what: &str, log: &Path, mut ready: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready().await {
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            bail!("{what} not ready within 20 s; {} says:\n{}", log.display(), tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts a hub and an edge with `streams` clip streams; viewers use plain TCP (no TLS on the
/// stream port, like the peers), the tunnel is mutual TLS.
pub async fn start_mediamesh(exe: &Path, dir: &Path, clip: &Path, streams: usize) -> anyhow::Result<Running> {
    let pki = mediamesh_tls::dev::write_pki(&dir.join("pki"), &["127.0.0.1".to_owned()], &[NODE.to_owned()])?;
    let (stream_port, tunnel_port, rtsp_port) = (free_port()?, free_port()?, free_port()?);
    let hub_yaml = format!(
        "cloudDataStream:\n  enable: true\n  streamPort: {stream_port}\n  tunnelPort: {tunnel_port}\n\
         \x20 listenAddress: \"127.0.0.1\"\n  tlsTunnelCAFile: {ca}\n  tlsTunnelCertFile: {hc}\n\
         \x20 tlsTunnelPrivateKeyFile: {hk}\n  linger: 600\n  streamMaxConnectionsPerIp: 100000\n  viewersPerIp: 100000\n  coldStartsPerMinute: 100000\n  frameLog: {{maxFrames: 128}}\n\
         \x20 rtsp: {{port: {rtsp_port}, udp: true, udpRtpPort: 0, udpRtcpPort: 0, maxConnectionsPerIp: 100000}}\n\
         \x20 webrtc: {{port: 0, maxSessions: 100000}}\n",
        ca = yaml_str(&pki.ca_cert),
        hc = yaml_str(&pki.hub.cert),
        hk = yaml_str(&pki.hub.key),
    );
    let (_, edge_tls) = &pki.edges[0];
    let mut edge_yaml = format!(
        "edgeDataStream:\n  enable: true\n  server: \"127.0.0.1:{tunnel_port}\"\n  nodeName: {NODE}\n\
         \x20 tlsTunnelCAFile: {ca}\n  tlsTunnelCertFile: {ec}\n  tlsTunnelPrivateKeyFile: {ek}\n  streams:\n",
        ca = yaml_str(&pki.ca_cert),
        ec = yaml_str(&edge_tls.cert),
        ek = yaml_str(&edge_tls.key),
    );
    for s in 0..streams {
        edge_yaml.push_str(&format!("    s{s}: {{file: {{path: {}, fps: 25, stamp: true}}}}\n", yaml_str(clip)));
    }
    let (hub_cfg, edge_cfg) = (dir.join("hub.yaml"), dir.join("edge.yaml"));
    std::fs::write(&hub_cfg, hub_yaml)?;
    std::fs::write(&edge_cfg, edge_yaml)?;
    let hub_log = dir.join("hub.log");
    let hub = spawn_logged(Command::new(exe).arg("hub").arg("--config").arg(&hub_cfg), &hub_log)?;
    let edge = spawn_logged(Command::new(exe).arg("edge").arg("--config").arg(&edge_cfg), &dir.join("edge.log"))?;
    let (hub_pid, edge_pid) = (hub.id().context("hub exited")?, edge.id().context("edge exited")?);
    let running = Running {
        server: Server::Mediamesh,
        pids: vec![hub_pid],
        edge_pid: Some(edge_pid),
        children: vec![hub, edge],
        feeder: None,
        host: "127.0.0.1".into(),
        stream_port,
        rtsp_port,
        rtmp_port: 0,
        paths: Vec::new(),
    };
    let api = format!("127.0.0.1:{stream_port}");
    wait_for("the hub and its edge", &hub_log, async || {
        http_get(&api, "/api/v1/nodes").await.is_ok_and(|b| b.contains(&format!("\"{NODE}\"")))
    })
    .await?;
    Ok(running)
}

/// A plain HTTP/1.1 GET; the body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// nginx with the RTMP module, one worker, everything under `dir`, serving one stream
/// (`live/s0`) published by ffmpeg, which the bench feeds.
pub async fn start_nginx(dir: &Path, clip: &Path) -> anyhow::Result<Running> {
    let port = free_port()?;
    let template = include_str!("../../../scripts/bench/nginx-rtmp.conf.in");
    let conf = template.replace("@PORT@", &port.to_string()).replace("@DIR@", &dir.display().to_string());
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let log = dir.join("nginx.log");
    let nginx = spawn_logged(
        Command::new("nginx")
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log")),
        &log,
    )
    .context("starting nginx (apt-get install nginx libnginx-mod-rtmp)")?;
    let pid = nginx.id().context("nginx exited")?;
    let addr = format!("127.0.0.1:{port}");
    wait_for("nginx", &log, async || tokio::net::TcpStream::connect(&addr).await.is_ok()).await?;
    let mut children = vec![nginx];
    let mut inputs = Vec::new();
    {
        let mut publisher = Command::new("ffmpeg");
        publisher
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-fflags",
                "nobuffer",
                "-probesize",
                "32",
                "-analyzeduration",
                "0",
            ])
            .args(["-f", "h264", "-framerate", "25"])
            .args(["-i", "pipe:0", "-c", "copy", "-f", "flv"])
            .arg(format!("rtmp://127.0.0.1:{port}/live/s0"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = publisher.spawn().context("starting the ffmpeg publisher")?;
        inputs.push(child.stdin.take().context("publisher stdin")?);
        children.push(child);
    }
    let feeder = feed(clip, inputs, Framing::AnnexBWithDelimiter)?;
    // nginx-rtmp refuses players of a stream nobody publishes yet: give ffmpeg time to connect.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // `master_process off`: the one process is the server.
    Ok(Running {
        server: Server::NginxRtmp,
        pids: vec![pid],
        edge_pid: None,
        children,
        feeder: Some(feeder),
        stream_port: 0,
        rtsp_port: 0,
        rtmp_port: port,
        host: "127.0.0.1".into(),
        paths: Vec::new(),
    })
}

/// GStreamer's RTSP server (scripts/bench/gst-rtsp-server.py) serving one stream at `/s0`, fed
/// by the bench.
pub async fn start_gstreamer(dir: &Path, clip: &Path) -> anyhow::Result<Running> {
    let port = free_port()?;
    let script = dir.join("gst-rtsp-server.py");
    std::fs::write(&script, include_str!("../../../scripts/bench/gst-rtsp-server.py"))?;
    let log = dir.join("gstreamer.log");
    let out = std::fs::File::create(&log)?;
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["--port", &port.to_string(), "--path", "/s0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .context("starting GStreamer's RTSP server (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0)")?;
    let pid = child.id().context("gstreamer exited")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout);
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(Duration::from_secs(20), lines.read_line(&mut line))
        .await
        .context("GStreamer's RTSP server did not say ready within 20 s")??;
    if line.trim() != "ready" {
        bail!("GStreamer's RTSP server failed; see {}", log.display());
    }
    let input = child.stdin.take().context("gstreamer stdin")?;
    let feeder = feed(clip, vec![input], Framing::LengthPrefixed)?;
    Ok(Running {
        server: Server::Gstreamer,
        pids: vec![pid],
        edge_pid: None,
        children: vec![child],
        feeder: Some(feeder),
        stream_port: 0,
        rtsp_port: port,
        rtmp_port: 0,
        host: "127.0.0.1".into(),
        paths: Vec::new(),
    })
}

/// Janus (Debian's `janus`) with only its HTTP transport and streaming plugin, on loopback:
/// mountpoint 1 takes H.264 over RTP, which ffmpeg sends it from the stamped clip.
pub async fn start_janus(dir: &Path, clip: &Path) -> anyhow::Result<Running> {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";
    let (http_port, rtp_port) = (free_port()?, free_port()?);
    let conf = dir.join("janus");
    std::fs::create_dir_all(&conf)?;
    let others = |kind: &str, keep: &str| -> anyhow::Result<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("{LIB}/{kind}"))
            .with_context(|| format!("{LIB}/{kind}: apt-get install janus"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".so") && n != keep)
            .collect();
        names.sort();
        Ok(names.join(","))
    };
    std::fs::write(
        conf.join("janus.jcfg"),
        format!(
            "general: {{\n  configs_folder = \"{c}\"\n  plugins_folder = \"{LIB}/plugins\"\n  transports_folder = \"{LIB}/transports\"\n  \
             events_folder = \"{LIB}/events\"\n  loggers_folder = \"{LIB}/loggers\"\n  debug_level = 3\n  session_timeout = 0\n}}\n\
             plugins: {{\n  disable = \"{p}\"\n}}\ntransports: {{\n  disable = \"{t}\"\n}}\n\
             events: {{\n  broadcast = false\n}}\n",
            c = conf.display(),
            p = others("plugins", "libjanus_streaming.so")?,
            t = others("transports", "libjanus_http.so")?,
        ),
    )?;
    std::fs::write(
        conf.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n  json = \"compact\"\n  base_path = \"/janus\"\n  http = true\n  port = {http_port}\n  ip = \"127.0.0.1\"\n  https = false\n}}\n\
             admin: {{\n  admin_http = false\n}}\n"
        ),
    )?;
    std::fs::write(
        conf.join("janus.plugin.streaming.jcfg"),
        format!(
            "general: {{\n}}\nbench: {{\n  type = \"rtp\"\n  id = 1\n  description = \"bench\"\n  audio = false\n  video = true\n  \
             videoport = {rtp_port}\n  videopt = 96\n  videocodec = \"h264\"\n  \
             videofmtp = \"profile-level-id=42e01f;packetization-mode=1\"\n}}\n"
        ),
    )?;
    let log = dir.join("janus.log");
    let janus = spawn_logged(Command::new("janus").arg("-C").arg(conf.join("janus.jcfg")).arg("-F").arg(&conf), &log)
        .context("starting janus (apt-get install janus)")?;
    let pid = janus.id().context("janus exited")?;
    let addr = format!("127.0.0.1:{http_port}");
    wait_for("janus", &log, async || tokio::net::TcpStream::connect(&addr).await.is_ok()).await?;
    let mut children = vec![janus];
    let mut sender = Command::new("ffmpeg");
    sender
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-fflags",
            "nobuffer",
            "-probesize",
            "32",
            "-analyzeduration",
            "0",
        ])
        .args(["-f", "h264", "-framerate", "25", "-i", "pipe:0", "-c", "copy", "-f", "rtp", "-payload_type", "96"])
        .arg(format!("rtp://127.0.0.1:{rtp_port}?pkt_size=1200"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = sender.spawn().context("starting the ffmpeg RTP sender")?;
    let input = child.stdin.take().context("sender stdin")?;
    let edge_pid = child.id();
    children.push(child);
    let feeder = feed(clip, vec![input], Framing::AnnexBWithDelimiter)?;
    Ok(Running {
        server: Server::Janus,
        pids: vec![pid],
        edge_pid,
        children,
        feeder: Some(feeder),
        stream_port: http_port,
        rtsp_port: 0,
        rtmp_port: 0,
        host: "127.0.0.1".into(),
        paths: Vec::new(),
    })
}

/// How the feeder writes access units.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// Raw H.264 with an access unit delimiter after each access unit, so ffmpeg's parser ends
    /// the access unit at once instead of waiting for the next one (a frame of latency).
    AnnexBWithDelimiter,
    /// A 4-byte big-endian length, then the access unit.
    LengthPrefixed,
}

/// Plays the clip in a loop at 25 fps into every input, stamping each frame as it goes, like
/// the mediamesh edge's clip source does.
fn feed(
    clip: &Path,
    mut inputs: Vec<ChildStdin>,
    framing: Framing,
) -> anyhow::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    let clip = Clip::parse(&std::fs::read(clip)?).map_err(anyhow::Error::msg)?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let period = Duration::from_millis(40);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let start = tokio::time::Instant::now();
        let mut out = Vec::new();
        loop {
            let at = tokio::select! {
                at = ticks.tick() => at,
                () = stop.cancelled() => return,
            };
            let counter = ((at - start).as_millis() / 40) as u64;
            let au = &clip.frames[(counter % clip.frames.len() as u64) as usize];
            for input in &mut inputs {
                out.clear();
                if let Framing::LengthPrefixed = framing {
                    out.extend_from_slice(&[0; 4]);
                }
                restamp(&au.data, TestPatternStamp { counter, capture_us: now_us() }, &mut out);
                match framing {
                    Framing::AnnexBWithDelimiter => out.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xf0]),
                    Framing::LengthPrefixed => {
                        let len = (out.len() - 4) as u32;
                        out[..4].copy_from_slice(&len.to_be_bytes());
                    }
                }
                if input.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok((cancel, task))
}
