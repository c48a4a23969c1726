//! `mediamesh demo`: a hub and an edge with two test-pattern cameras in one process.
//!
//! It writes a development PKI and a `demo.yaml` (both blocks, a working example) into a state
//! folder, loads that file like `hub` and `edge` do, runs both sides with mutual TLS on the
//! tunnel and authentication on (a token signing key made for the run, a 24-hour viewer token),
//! and prints first the web page's address, then what else to run to watch, each carrying the
//! token. Viewers get plain HTTP on loopback (so a browser opens the page without a certificate
//! warning) and HTTPS/WSS when `--listen` is wider.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use mediamesh_edge::Edge;
use mediamesh_hub::Hub;

use mediamesh_auth::Permission;
use mediamesh_auth::jwt::ed25519_pair;

use mediamesh_config as config;

/// The demo's node name.
const NODE: &str = "demo-edge";
/// How long the printed viewer token is valid.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The claim that carries a token's permissions (the `jwt.claim` default).
const CLAIM: &str = "mediamesh_permissions";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port for viewers and the API (0 picks a free one).
    #[arg(long, default_value_t = 10005)]
    stream_port: u16,
    /// Port for edge tunnels (0 picks a free one).
    #[arg(long, default_value_t = 10006)]
    tunnel_port: u16,
    /// Port for RTSP viewers (0 picks a free one).
    #[arg(long, default_value_t = 8554)]
    rtsp_port: u16,
    /// Address to listen on; use 0.0.0.0 to let other machines watch.
    #[arg(long, default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Where certificates and demo.yaml go; default: $XDG_STATE_HOME/mediamesh/demo.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Seconds a camera keeps running after its last viewer leaves.
    #[arg(long, default_value_t = 10.0)]
    linger: f64,
}

fn yaml_path(p: &Path) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = args.state_dir.clone().unwrap_or_else(|| super::state_dir("demo"));
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let hub_names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    let pki = mediamesh_tls::dev::write_pki(&dir, &hub_names, &[NODE.to_owned()])
        .with_context(|| format!("writing demo certificates to {}", dir.display()))?;
    let (_, edge_tls) = &pki.edges[0];
    // Auth on, as a real hub: a key made for this run (older tokens stop working) and a token
    // for the printed commands.
    let (minter, jwt_public, jwt_private) = ed25519_pair()?;
    let jwt_key = dir.join("jwt.pub.pem");
    std::fs::write(&jwt_key, jwt_public).with_context(|| format!("writing {}", jwt_key.display()))?;
    super::auth::write_private(&dir.join("jwt.pem"), &jwt_private)?;
    let grants: Vec<Permission> = ["read:*", "api", "metrics"].iter().filter_map(|g| g.parse().ok()).collect();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + TOKEN_TTL.as_secs();
    let token = minter.mint("demo-viewer", &grants, exp, None, None, CLAIM)?;
    let token_path = dir.join("viewer.token");
    super::auth::write_private(&token_path, &format!("{token}\n"))?;
    let host = if args.listen.is_unspecified() { "127.0.0.1".to_owned() } else { args.listen.to_string() };
    // Viewers on this machine get plain HTTP, so a browser opens the page without a certificate
    // warning (TLS on loopback protects nothing); listening beyond it, the stream port keeps TLS.
    // The tunnel is mutual TLS either way.
    let viewer_tls = !args.listen.is_loopback();
    let stream_tls = if viewer_tls {
        format!(
            "\x20 tlsStreamCertFile: {}\n  tlsStreamPrivateKeyFile: {}\n",
            yaml_path(&pki.hub.cert),
            yaml_path(&pki.hub.key)
        )
    } else {
        String::new()
    };
    let yaml = format!(
        "# Written by `mediamesh demo`: a hub and an edge in one file. Edit a copy and run\n\
         # `mediamesh hub -c FILE` and `mediamesh edge -c FILE` to run them apart.\n\
         cloudDataStream:\n  enable: true\n  streamPort: {sp}\n  tunnelPort: {tp}\n  listenAddress: \"{listen}\"\n\
         {stream_tls}\
         \x20 tlsTunnelCAFile: {ca}\n  tlsTunnelCertFile: {hc}\n  tlsTunnelPrivateKeyFile: {hk}\n  linger: {linger}\n\
         \x20 rtsp: {{port: {rp}, udpRtpPort: 0, udpRtcpPort: 0}}\n\
         \x20 webrtc: {{port: 0}}\n\
         \x20 auth:\n    jwt: {{keyFile: {jwt}, algorithms: [EdDSA]}}\n\
         edgeDataStream:\n  enable: true\n  server: \"{host}:{tp}\"\n  nodeName: {NODE}\n\
         \x20 tlsTunnelCAFile: {ca}\n  tlsTunnelCertFile: {ec}\n  tlsTunnelPrivateKeyFile: {ek}\n\
         \x20 streams:\n\
         \x20   cam1:\n      description: test pattern, 1280x720 at 25 fps\n      testPattern: {{width: 1280, height: 720, fps: 25, bitrateKbps: 2000, gop: 50}}\n\
         \x20   cam2:\n      description: test pattern, 640x360 at 15 fps\n      testPattern: {{width: 640, height: 360, fps: 15, bitrateKbps: 600, gop: 30}}\n",
        sp = args.stream_port,
        rp = args.rtsp_port,
        tp = args.tunnel_port,
        listen = args.listen,
        linger = args.linger,
        hc = yaml_path(&pki.hub.cert),
        hk = yaml_path(&pki.hub.key),
        ca = yaml_path(&pki.ca_cert),
        ec = yaml_path(&edge_tls.cert),
        ek = yaml_path(&edge_tls.key),
        jwt = yaml_path(&jwt_key),
    );
    let config_path = dir.join("demo.yaml");
    std::fs::write(&config_path, &yaml).with_context(|| format!("writing {}", config_path.display()))?;
    // Loaded as `hub` and `edge` load their files (environment overrides included).
    let env = config::process_env();
    let (Some(hub_cfg), Some(edge_cfg)) = (
        config::load::<mediamesh_hub::HubConfig>(&config_path, &env)?,
        config::load::<mediamesh_edge::EdgeConfig>(&config_path, &env)?,
    ) else {
        anyhow::bail!("{}: a block of the demo configuration is disabled", config_path.display());
    };
    let (hub_cfg, mut edge_cfg) = (hub_cfg.config, edge_cfg.config);

    let hub = Hub::bind(hub_cfg)
        .await
        .context("starting the demo hub (is another demo running? try --stream-port 0 --tunnel-port 0)")?;
    // With port 0 the real tunnel port is known only now.
    edge_cfg.server = format!("{host}:{}", hub.tunnel_addr.port());
    let edge = Edge::start(edge_cfg).context("starting the demo edge")?;

    let deadline = Instant::now() + Duration::from_secs(15);
    while !hub.registry().snapshot().iter().any(|(n, _)| n == NODE) {
        if Instant::now() > deadline {
            anyhow::bail!("the demo edge did not connect to the hub within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let exe = std::env::current_exe().map_or_else(|_| "mediamesh".to_owned(), |p| p.display().to_string());
    let port = hub.stream_addr.port();
    let (http, ws) = if viewer_tls { ("https", "wss") } else { ("http", "ws") };
    let base = format!("{ws}://{host}:{port}");
    let ca = pki.ca_cert.display();
    let (ca_arg, cacert_arg) =
        if viewer_tls { (format!(" --ca {ca}"), format!(" --cacert {ca}")) } else { (String::new(), String::new()) };
    // The token rides in the fragment, which the browser keeps to itself: the page reads it and
    // no server log ever sees it.
    println!("Open the page in a browser: {http}://{host}:{port}/#token={token}");
    if viewer_tls {
        println!("(It uses the demo's own certificate authority, {ca}: add it to the browser or accept the warning.)");
    }
    println!();
    println!("mediamesh demo: a hub and edge node {NODE:?} with cameras cam1 (1280x720@25) and cam2 (640x360@15).");
    println!("The edge dialled the hub over mutual TLS; a camera starts when someone watches it.");
    println!();
    println!("Watch cam1 (in another terminal):");
    println!(
        "  {exe} view {base}/api/v1/nodes/{NODE}/streams/cam1/ws --token {token}{ca_arg} --frames 100 --out cam1.h264"
    );
    println!("  ffprobe cam1.h264");
    if let Some(rtsp) = hub.rtsp_url(NODE, "cam1") {
        // In the URL's query: ffmpeg cuts a password longer than 127 bytes, so a token cannot
        // go there for every client.
        println!("Or with any RTSP client (ffplay, VLC, GStreamer, OpenCV):");
        println!("  ffplay -rtsp_transport tcp {rtsp}?token={token}");
        println!("  ffprobe -rtsp_transport udp {}?token={token}", rtsp.replace("/cam1", "/cam2"));
    }
    println!("The REST API:");
    println!("  curl{cacert_arg} -H 'Authorization: Bearer {token}' {http}://{host}:{port}/api/v1/streams");
    println!("Without the token, each of these is refused. The token (read, API and metrics on every");
    println!("stream, valid 24 h) is in {}; mint others with", token_path.display());
    println!("  {exe} auth token --key {} --grant 'read:{NODE}/cam1' --ttl 1h", dir.join("jwt.pem").display());
    println!("Configuration used: {}", config_path.display());
    println!();
    println!("mediamesh demo ready on {http}://{host}:{port} (Ctrl-C to stop)");

    let mut signals = super::Signals::new().context("installing signal handlers")?;
    while signals.next().await == super::Signal::Reload {
        tracing::warn!("SIGHUP: the demo does not reload its configuration; stop it and start it again");
    }
    tracing::info!("stopping");
    edge.stop(Duration::from_secs(5)).await;
    hub.stop(Duration::from_secs(5)).await;
    Ok(())
}
